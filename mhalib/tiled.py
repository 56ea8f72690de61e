"""Tiled attention: the online softmax, one block of keys at a time (FlashAttention's idea).

The explicit attention of ``functional.py`` stores the (..., L, S) scores and weights. Here
the queries are cut into blocks of ``block_q`` rows and the keys into blocks of
``block_k``; for each query block a running maximum ``m``, a running sum ``l`` and an
unnormalised output ``acc`` are updated block by block of keys (the online softmax of
Milakov & Gimelshein, 2018), so no more than one (..., block_q, block_k) tile of scores
exists at a time. With ``is_causal`` the key blocks wholly above the diagonal are skipped
and only the blocks the diagonal crosses are masked.

Shapes: B batch, H heads, L query length, S key/value length, E query/key features,
Ev value features; ``...`` any batch dimensions (none, (B,), (B, H), ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .functional import _check_qkv

__all__ = ["tiled_attention", "causal_block_kind"]


def causal_block_kind(q_start: int, q_stop: int, k_start: int, k_stop: int) -> str:
    """How top-left causal masking treats the tile of queries [q_start, q_stop) x keys [k_start, k_stop).

    Query ``i`` may attend to key ``j`` when ``j <= i``. Returns ``"skip"`` when no pair of
    the tile is allowed (its first key comes after its last query), ``"full"`` when every
    pair is (its last key is at or before its first query), ``"diagonal"`` otherwise: the
    diagonal crosses the tile, which is the only kind that needs a mask.
    """
    if k_start > q_stop - 1:
        return "skip"
    if k_stop - 1 <= q_start:
        return "full"
    return "diagonal"


def _check_block(name: str, block: object) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"{name} must be a positive int (rows per block), got {block!r}")
    return block


def tiled_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 1024,
    block_k: int = 512,
) -> Tensor:
    """Scaled dot-product attention computed tile by tile, never storing the (L, S) scores.

    Gives the results of ``torch.nn.functional.scaled_dot_product_attention(query, key,
    value, is_causal=is_causal, scale=scale)``, causal masks top-left aligned as there
    (query ``i`` may attend to keys ``0..i``, also when L != S).

    Shapes:
        query (..., L, E), key (..., S, E), value (..., S, Ev); the batch dimensions ``...``
        broadcast against each other (any number of them, including none)
        -> out (..., L, Ev)

    For each block of ``block_q`` queries the keys are visited in blocks of ``block_k``:

        scores = (q_blk * scale) @ k_blk^T                  # (..., block_q, block_k)
        m_new  = max(m, rowmax(scores))                     # running maximum
        p      = exp(scores - m_new)                        # in place, in the scores
        alpha  = exp(m - m_new)                             # how much the old max was off
        l      = alpha * l + rowsum(p)                      # running sum of the weights
        acc    = alpha * acc + p @ v_blk                    # running weighted sum of values
        out    = acc / l                                    # once, after the last key block

    With ``is_causal`` the key blocks after a query block's last query are never visited,
    only the tiles the diagonal crosses are masked, and in those the leading queries that
    come before the tile's first key (they see none of its keys) are left out of the tile.

    Memory: apart from the output, one (..., block_q, block_k) tile of scores and
    (..., block_q) and (..., block_q, Ev) running statistics, independent of L and S. The
    tile is one buffer, allocated once and reused by every step (a freshly allocated tile
    of tens of MiB costs the operating system's page faults at every step); the scores are
    turned into weights in place and ``acc`` is the output's own slice.

    Backward: this is a forward pass written in PyTorch operations. When an input requires
    grad, the same loop runs with out-of-place operations so that autograd can record it;
    autograd then keeps every tile's weights for the backward pass, which costs as much
    memory as the explicit (L, S) attention (more, with the per-block bookkeeping) and
    about twice the forward's time. FlashAttention's backward instead keeps only the
    per-row log-sum-exp ``m + log(l)`` and recomputes each tile; that is not done here.

    S = 0 (no keys at all) gives a zero output, as PyTorch's fused kernel does.
    """
    _check_qkv(query, key, value)
    try:
        batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of query {tuple(query.shape[:-2])}, key {tuple(key.shape[:-2])} "
            f"and value {tuple(value.shape[:-2])} do not broadcast"
        ) from None
    block_q = _check_block("block_q", block_q)
    block_k = _check_block("block_k", block_k)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")

    L, S, Ev = query.shape[-2], key.shape[-2], value.shape[-1]
    # In place unless autograd must record the loop (it cannot go through an overwritten tile).
    in_place = not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
    score_batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])  # the scores' batch dims
    out = query.new_zeros(*batch, L, Ev)  # (..., L, Ev); each block's accumulator is a slice of it
    blocks = []  # the finished blocks, when autograd needs out-of-place results
    key_t = key.transpose(-2, -1)  # (..., S, E) -> (..., E, S), a view
    # One buffer for the tiles of scores, reused by every step (in place only).
    tile = query.new_empty(math.prod(score_batch) * min(block_q, L) * min(block_k, S) if in_place else 0)
    if is_causal:  # (block_q, block_k): column c minus row r, for the masks of the diagonal tiles
        key_minus_query = torch.arange(block_k, device=query.device) - torch.arange(block_q, device=query.device)[:, None]

    for q_start in range(0, L, block_q):
        q_stop = min(q_start + block_q, L)
        q_blk = query[..., q_start:q_stop, :] * scale  # (..., bq, E): scaling q is cheaper than the tile
        m = q_blk.new_full((*score_batch, q_stop - q_start, 1), float("-inf"))  # (..., bq, 1) running max
        l = q_blk.new_zeros((*score_batch, q_stop - q_start, 1))  # (..., bq, 1) running sum
        acc = out[..., q_start:q_stop, :] if in_place else q_blk.new_zeros((*batch, q_stop - q_start, Ev))
        # Causal: key blocks starting after the block's last query see nothing; stop there.
        k_end = min(S, q_stop) if is_causal else S
        for k_start in range(0, k_end, block_k):
            k_stop = min(k_start + block_k, S)
            # Causal: the queries before k_start see no key of this tile; in place, their rows
            # are left out (out of place they stay in, masked: they add exp(-inf) = 0).
            first = max(q_start, k_start) if is_causal and in_place else q_start  # first query in the tile
            rows = slice(first - q_start, None)  # the tile's rows of q_blk, m, l and acc
            n_rows, n_keys = q_stop - first, k_stop - k_start
            if in_place:
                scores = tile[: math.prod(score_batch) * n_rows * n_keys].view(*score_batch, n_rows, n_keys)
                torch.matmul(q_blk[..., rows, :], key_t[..., k_start:k_stop], out=scores)  # (..., rows, bk)
            else:
                scores = q_blk @ key_t[..., k_start:k_stop]  # (..., bq, E) @ (..., E, bk) -> (..., bq, bk)
            if is_causal and causal_block_kind(first, q_stop, k_start, k_stop) == "diagonal":
                # key k_start + c may be seen by query first + r when c - r <= first - k_start
                future = key_minus_query[:n_rows, :n_keys] > first - k_start  # (rows, bk)
                if in_place:
                    scores.masked_fill_(future, float("-inf"))  # in place: no second tile
                else:
                    scores = scores.masked_fill(future, float("-inf"))
            m_old = m[..., rows, :]
            m_new = torch.maximum(m_old, scores.amax(dim=-1, keepdim=True))  # (..., rows, 1)
            # Every row has key 0 in its first visited block, so m_new is finite from then on
            # and exp(-inf - m_new) = 0 handles the masked entries and the initial m.
            alpha = torch.exp(m_old - m_new)  # (..., rows, 1): rescales what was summed under the old max
            if in_place:
                p = scores.sub_(m_new).exp_()  # the tile's weights (unnormalised), in place
                l[..., rows, :].mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
                acc[..., rows, :].mul_(alpha).add_(p @ value[..., k_start:k_stop, :])  # (..., rows, Ev)
                m_old.copy_(m_new)
            else:
                p = torch.exp(scores - m_new)  # (..., bq, bk)
                l = alpha * l + p.sum(dim=-1, keepdim=True)
                acc = alpha * acc + p @ value[..., k_start:k_stop, :]  # (..., bq, bk) @ (..., bk, Ev)
                m = m_new
            del scores, p  # out of place: free this tile before the next one is allocated
        # l = 0 only when S = 0 (no keys): the output stays 0 there.
        if in_place:
            acc.div_(l.clamp_min_(torch.finfo(l.dtype).tiny))
        else:
            blocks.append(acc / l.clamp_min(torch.finfo(l.dtype).tiny))
    if in_place:
        return out
    return torch.cat(blocks, dim=-2) if blocks else out  # (..., L, Ev)
