"""Pure attention functions: masks, scaled dot-product attention, the head layouts, and
the pieces of a multi-head layer's forward pass that ``MultiHeadAttention`` and
``mhalib.parallel.ShardedHeads`` share (input checks, the combined mask, packed projections).

Shapes (the legend of the whole course):
    B batch, H heads, L query length, S key/value length,
    D model width (embed_dim), Dh = D // H (head_dim), E / Ev feature sizes of query-key / value.

Masks follow PyTorch's ``scaled_dot_product_attention``: a boolean mask is True where a
query **may attend**; a float mask is **added** to the scores. A query row with nothing to
attend to gets zero weights and a zero output, never NaN and never uniform weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "causal_mask",
    "padding_mask",
    "repeat_kv",
    "masked_softmax",
    "scaled_dot_product_attention",
    "split_heads",
    "merge_heads",
    "transpose_qkv",
    "transpose_output",
    "check_attention_inputs",
    "combined_mask",
    "packed_linear",
]


# --- argument checks: each names the argument, what was expected and what arrived --------


def _check_tensor(name: str, x: object, ndim: int | None = None, min_ndim: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def _check_floating(name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_qkv(query: object, key: object, value: object) -> None:
    """query (..., L, E), key (..., S, E), value (..., S, Ev): floating tensors of one dtype.

    Shared by every attention function (``scaled_dot_product_attention``, ``tiled_attention``).
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, x, min_ndim=2)
        _check_floating(name, x)
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same feature size E, got query (..., L, {query.shape[-1]}) "
            f"and key (..., S, {key.shape[-1]})"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same length S, got key (..., {key.shape[-2]}, E) "
            f"and value (..., {value.shape[-2]}, Ev)"
        )
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")


def _check_num_heads(num_heads: object, width: int, what: str) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if width % num_heads != 0:
        raise ValueError(f"{what} ({width}) must be divisible by num_heads ({num_heads})")
    return num_heads


def _mask_to_allowed_or_bias(name: str, mask: Tensor, scores_shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Check that ``mask`` broadcasts to the scores; return it as bool or as ``dtype``."""
    _check_tensor(name, mask)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{name} must be bool (True = may attend) or floating (added to the scores), got dtype {mask.dtype}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
            f"{tuple(scores_shape)} (..., L, S)"
        )
    return mask if mask.dtype == torch.bool else mask.to(dtype)


def _check_valid_lens(valid_lens: object, batch: int, length: int | None) -> Tensor:
    _check_tensor("valid_lens", valid_lens)
    if valid_lens.dtype == torch.bool or valid_lens.is_floating_point() or valid_lens.is_complex():
        raise TypeError(f"valid_lens must be an integer tensor (lengths), got dtype {valid_lens.dtype}")
    shapes = {"(B,)": (batch,)} | ({"(B, L)": (batch, length)} if length is not None else {})
    if tuple(valid_lens.shape) not in shapes.values():
        expected = " or ".join(f"{legend} = {shape}" for legend, shape in shapes.items())
        raise ValueError(f"valid_lens must have shape {expected}, got {tuple(valid_lens.shape)}")
    return valid_lens


# --- masks ------------------------------------------------------------------------------


def causal_mask(
    L: int, S: int | None = None, device: torch.device | str | None = None, *, lower_right: bool = False
) -> Tensor:
    """Boolean causal mask, True where query ``i`` may attend to key ``j``.

    Top-left aligned by default, as PyTorch's ``scaled_dot_product_attention(is_causal=True)``:
    row ``i`` allows keys ``0..i``. With ``lower_right=True`` the L queries are the *last* L
    positions of the S keys, as in a decoder whose cache holds the S - L earlier tokens:
    row ``i`` allows keys ``0..S-L+i``. The two agree when L == S. The trap: one new token
    against 5 cached keys (L=1, S=6) sees only key 0 top-left, and all 6 keys lower-right.
    When L > S, lower-right leaves the first L - S rows with nothing to attend to.

    Shapes:
        returns (L, S), S defaulting to L.
    """
    S = L if S is None else S
    for name, n in (("L", L), ("S", S)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    if not isinstance(lower_right, bool):
        raise TypeError(f"lower_right must be a bool, got {type(lower_right).__name__}")
    # tril(d) keeps j <= i + d: d = 0 top-left, d = S - L lower-right.
    return torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L if lower_right else 0)


def padding_mask(valid_lens: Tensor, S: int) -> Tensor:
    """Boolean mask from padding lengths: key ``j`` may be attended to when ``j < valid_len``.

    This is the one place where padding lengths become the course's boolean mask.
    ``valid_lens`` holds one length per sequence or per query, as the ``valid_lens`` of
    the Dive into Deep Learning book's ``masked_softmax``.

    Shapes:
        valid_lens (B,) one length per sequence  -> (B, 1, 1, S)
        valid_lens (B, L) one length per query   -> (B, 1, L, S)
        Both broadcast to the multi-head scores (B, H, L, S).
    """
    _check_tensor("valid_lens", valid_lens)
    if valid_lens.dim() not in (1, 2):
        raise ValueError(f"valid_lens must have shape (B,) or (B, L), got {tuple(valid_lens.shape)}")
    _check_valid_lens(valid_lens, valid_lens.shape[0], valid_lens.shape[-1] if valid_lens.dim() == 2 else None)
    positions = torch.arange(S, device=valid_lens.device)  # (S,)
    if valid_lens.dim() == 1:
        return positions < valid_lens[:, None, None, None]  # (B, 1, 1, S)
    return positions < valid_lens[:, None, :, None]  # (B, 1, L, S)


# --- softmax that leaves rows with nothing to attend to at zero ----------------------------


def _softmax_with_empty_rows(scores: Tensor, empty_rows: Tensor | None) -> Tensor:
    """Softmax over the last axis; rows flagged in ``empty_rows`` (all keys masked) become 0.

    The empty rows' scores are replaced by 0 before the softmax, so neither the forward
    pass nor the gradient ever sees ``-inf - (-inf) = NaN``.
    """
    if empty_rows is None or not bool(empty_rows.any()):
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(empty_rows, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(empty_rows, 0.0)


def masked_softmax(scores: Tensor, valid_lens: Tensor | None = None) -> Tensor:
    """Softmax over keys, ignoring padded keys given by their lengths ``valid_lens``.

    Keys at positions ``>= valid_len`` get weight exactly 0; a valid length of 0 gives a
    row of zeros.

    Shapes:
        scores (B, L, S); valid_lens None, (B,) one per sequence, or (B, L) one per query
        -> weights (B, L, S)
    """
    _check_tensor("scores", scores, ndim=3)
    _check_floating("scores", scores)
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    B, L, S = scores.shape
    _check_valid_lens(valid_lens, B, L)
    allowed = padding_mask(valid_lens, S)[:, 0]  # (B, 1, 1, S) or (B, 1, L, S) -> (B, 1|L, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return _softmax_with_empty_rows(scores, ~allowed.any(dim=-1, keepdim=True))


# --- scaled dot-product attention ---------------------------------------------------------


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor]:
    """Attention that also returns its weights; the semantics of PyTorch's fused function.

    Reference::

        scores = query @ key.transpose(-2, -1) * scale      # (..., L, S)
        scores = scores.masked_fill(~attn_mask, -inf)       # bool mask: True = may attend
        # (or scores + attn_mask for a float mask)
        weights = softmax(scores, dim=-1)                   # rows with no key allowed -> 0
        out = dropout(weights) @ value                      # (..., L, Ev)

    Shapes:
        query (..., L, E), key (..., S, E), value (..., S, Ev)
        attn_mask broadcastable to (..., L, S): bool (True = may attend) or float (added)
        -> out (..., L, Ev), weights (..., L, S)

    ``is_causal`` masks the future with ``causal_mask(L, S)`` (top-left aligned) and may
    not be combined with ``attn_mask``. ``scale`` defaults to ``1 / sqrt(E)``. With
    ``dropout_p > 0`` the returned weights are the ones used, after dropout.

    ``enable_gqa=True`` (grouped-query attention, as in PyTorch): query (..., H, L, E) may
    have more heads than key and value (..., Hkv, S, E); query head ``h`` uses KV head
    ``h // (H // Hkv)`` (:func:`repeat_kv`), and the weights are (..., H, L, S).

    Memory: this explicit path stores the (..., L, S) scores and weights, so it grows with
    L * S: B=4, H=8, L=S=4096 in float32 needs about 4 GiB. ``MultiHeadAttention`` with
    ``need_weights=False`` uses PyTorch's fused kernel instead, which does not.
    """
    _check_qkv(query, key, value)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (combine them into one mask)")
    if enable_gqa:
        key, value = _repeat_kv_for_query(query, key, value)

    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Scaling the (..., L, E) query costs less than scaling the (..., L, S) scores; same result.
    scores = (query * scale) @ key.transpose(-2, -1)  # (..., L, E) @ (..., E, S) -> (..., L, S)

    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    empty_rows = None
    if attn_mask is not None:
        mask = _mask_to_allowed_or_bias("attn_mask", attn_mask, scores.shape, scores.dtype)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
            empty_rows = ~mask.any(dim=-1, keepdim=True)
        else:
            scores = scores + mask
            empty_rows = torch.isneginf(mask).all(dim=-1, keepdim=True)
    weights = _softmax_with_empty_rows(scores, empty_rows)  # (..., L, S)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    return out, weights


def _repeat_kv_for_query(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """enable_gqa: repeat the Hkv key/value heads to the query's H heads."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, x, min_ndim=3)
    H, Hkv = query.shape[-3], key.shape[-3]
    if value.shape[-3] != Hkv:
        raise ValueError(f"key and value must have the same number of heads, got {Hkv} and {value.shape[-3]}")
    if H % Hkv != 0:
        raise ValueError(
            f"with enable_gqa the query's heads ({H}) must be a multiple of the key's and value's heads ({Hkv})"
        )
    return repeat_kv(key, H // Hkv), repeat_kv(value, H // Hkv)  # (..., Hkv, S, E) -> (..., H, S, E)


# --- head layouts -------------------------------------------------------------------------


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """Cut the features of every token into ``num_heads`` heads.

    Head ``h`` holds features ``h*Dh:(h+1)*Dh``. Reshape first, *then* swap L and H:
    reshaping straight to (B, H, L, Dh) would mix tokens across heads.

    Shapes:
        x (B, L, D) -> (B, H, L, Dh)
    """
    _check_tensor("x", x, ndim=3)
    B, L, D = x.shape
    H = _check_num_heads(num_heads, D, "the feature size D of x")
    return x.reshape(B, L, H, D // H).transpose(1, 2)  # (B, L, D) -> (B, L, H, Dh) -> (B, H, L, Dh)


def merge_heads(x: Tensor) -> Tensor:
    """Put the heads back side by side: the inverse of :func:`split_heads`.

    Shapes:
        x (B, H, L, Dh) -> (B, L, H*Dh)
    """
    _check_tensor("x", x, ndim=4)
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * Dh)  # (B, H, L, Dh) -> (B, L, H, Dh) -> (B, L, H*Dh)


def transpose_qkv(x: Tensor, num_heads: int) -> Tensor:
    """The folded layout of Dive into Deep Learning's ``transpose_qkv``: heads moved into the batch axis.

    Row ``b*H + h`` holds head ``h`` of sequence ``b``, so the heads of one sequence are
    adjacent (which is why per-sequence lengths are repeated with ``repeat_interleave``).

    Shapes:
        x (B, L, D) -> (B*H, L, Dh)
    """
    heads = split_heads(x, num_heads)  # (B, H, L, Dh)
    B, H, L, Dh = heads.shape
    return heads.reshape(B * H, L, Dh)  # (B, H, L, Dh) -> (B*H, L, Dh)


def transpose_output(x: Tensor, num_heads: int) -> Tensor:
    """The inverse of :func:`transpose_qkv`.

    Shapes:
        x (B*H, L, Dh) -> (B, L, H*Dh)
    """
    _check_tensor("x", x, ndim=3)
    BH, L, Dh = x.shape
    H = _check_num_heads(num_heads, BH, "the first dimension B*H of x")
    return merge_heads(x.reshape(BH // H, H, L, Dh))  # (B*H, L, Dh) -> (B, H, L, Dh) -> (B, L, H*Dh)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Grouped-query attention: give each of the H query heads its key/value head.

    Every KV head is repeated ``n_rep = H // Hkv`` times *in a row*, so query head ``h``
    gets KV head ``h // n_rep``: with Hkv = 3 and n_rep = 3 the heads come out as
    0 0 0 1 1 1 2 2 2. That is ``repeat_interleave``. ``x.repeat(1, n_rep, 1, 1)`` would
    give 0 1 2 0 1 2 0 1 2, the right shape with the wrong pairing, and no error.

    Shapes:
        x (B, Hkv, S, Dh) -> (B, Hkv*n_rep, S, Dh); any leading axes before Hkv work too
    """
    _check_tensor("x", x, min_ndim=3)
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be a positive int, got {n_rep!r}")
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=-3)  # (..., Hkv, S, Dh) -> (..., Hkv*n_rep, S, Dh)


# --- shared by the multi-head layers (MultiHeadAttention, parallel.ShardedHeads) -----------


def check_attention_inputs(query: object, key: object, value: object, embed_dim: int, kdim: int, vdim: int) -> None:
    """Check a multi-head layer's query, key and value; raise naming the argument.

    Shapes:
        query (B, L, embed_dim), key (B, S, kdim), value (B, S, vdim)
    """
    for name, x, width, width_name in (
        ("query", query, embed_dim, "embed_dim"),
        ("key", key, kdim, "kdim"),
        ("value", value, vdim, "vdim"),
    ):
        _check_tensor(name, x, ndim=3)
        _check_floating(name, x)
        if x.shape[-1] != width:
            raise ValueError(f"{name} must have {width_name}={width} features (B, *, {width}), got shape {tuple(x.shape)}")
    if not query.shape[0] == key.shape[0] == value.shape[0]:
        raise ValueError(
            f"query, key and value must share the batch size B, got {query.shape[0]}, {key.shape[0]}, {value.shape[0]}"
        )
    if key.shape[1] != value.shape[1]:
        raise ValueError(f"key and value must have the same length S, got {key.shape[1]} and {value.shape[1]}")


def combined_mask(
    attn_mask: Tensor | None,
    valid_lens: Tensor | None,
    is_causal: bool,
    *,
    num_heads: int,
    batch: int,
    L: int,
    S: int,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    lower_right: bool = False,
) -> Tensor | None:
    """A multi-head layer's ``attn_mask``, ``valid_lens`` and ``is_causal`` as one mask, or None.

    ``attn_mask`` may be (L, S), (B, L, S) (one mask for every head), (B*H, L, S) as in
    ``torch.nn.MultiheadAttention``, or anything broadcasting to (B, H, L, S); bool
    (True = may attend) or float (added). The result is bool, or float when ``attn_mask``
    is float (padding and causal positions become -inf).

    Returns None when only ``is_causal`` is set, so a fused kernel can use PyTorch's own
    causal kernel instead of an explicit mask; except with ``lower_right`` (a cache: the L
    queries are the last of S positions) and L != S, where the kernel's top-left
    alignment would be wrong and the causal mask is made explicit.

    Shapes:
        -> None, or a mask broadcastable to (B, H, L, S): (L, S), (B, 1, 1|L, S), (B, H, L, S)
    """
    B, H = batch, num_heads
    mask = None
    if attn_mask is not None:
        _check_tensor("attn_mask", attn_mask)
        shape = tuple(attn_mask.shape)
        if H > 1 and shape == (B * H, L, S):
            attn_mask = attn_mask.reshape(B, H, L, S)  # PyTorch's (B*H, L, S) -> (B, H, L, S)
        elif attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)  # (B, L, S) -> (B, 1, L, S), one mask for every head
        try:
            mask = _mask_to_allowed_or_bias("attn_mask", attn_mask, torch.Size((B, H, L, S)), dtype)
        except ValueError:  # name the shapes we accept, and the shape that arrived (not our reshape of it)
            raise ValueError(
                f"attn_mask must have shape (L, S) = {(L, S)}, (B, L, S) = {(B, L, S)}, "
                f"(B*H, L, S) = {(B * H, L, S)} or broadcast to (B, H, L, S) = {(B, H, L, S)}, got {shape}"
            ) from None
    if valid_lens is not None:
        _check_valid_lens(valid_lens, B, L)
        mask = _and_masks(mask, padding_mask(valid_lens, S))  # (B, 1, 1|L, S)
    if is_causal and (mask is not None or (lower_right and L != S)):
        mask = _and_masks(mask, causal_mask(L, S, device=device, lower_right=lower_right))  # (L, S)
    return mask


def _and_masks(mask: Tensor | None, allowed: Tensor) -> Tensor:
    """Combine a bool or float mask with a bool one (True = may attend)."""
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, float("-inf"))


def packed_linear(x: Tensor, weights: list[Tensor], biases: list[Tensor | None]) -> tuple[Tensor, ...]:
    """``F.linear(x, weights[i], biases[i])`` for every i, as ONE matrix product.

    The weights are stacked into one (sum of Dout_i, Din) matrix (and the biases into one
    vector), ``x`` is multiplied by it once, and the result is cut back into one tensor per
    weight. The pieces are views of that one result: each is contiguous along its last
    axis, with rows ``sum of Dout_i`` apart. That is what ``torch.nn.MultiheadAttention``'s
    ``in_proj_weight`` does for self-attention, here with the weights kept apart and
    stacked on each call (the stacking is a copy of the weights only, small next to the
    product, and autograd sends each piece's gradient back to its own weight).

    Shapes:
        x (..., Din), weights[i] (Dout_i, Din), biases[i] (Dout_i,) or all None
        -> tuple of (..., Dout_i)
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"packed_linear needs one bias (or None) per weight, got {len(weights)} weights and {len(biases)} biases")
    if any(b is None for b in biases) and not all(b is None for b in biases):
        raise ValueError("packed_linear needs either a bias for every weight or none at all")
    weight = weights[0] if len(weights) == 1 else torch.cat(weights)  # (sum Dout_i, Din)
    bias = None if biases[0] is None else torch.cat(biases)  # (sum Dout_i,)
    out = F.linear(x, weight, bias)  # (..., Din) -> (..., sum Dout_i)
    return out.split([w.shape[0] for w in weights], dim=-1)  # views (..., Dout_i)
