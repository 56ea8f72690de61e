"""Reference solutions of the exercises, written to be read by learners.

``EXERCISES[id].solution()`` prints one of these. They use plain torch only, so that each
one shows the whole idea; the checker compares learners' answers with the tested
``mhalib`` functions, and the tests check that these solutions pass too.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def solution_softmax_weights(scores: Tensor) -> Tensor:
    """Softmax over the last axis (the keys): positive weights that sum to 1 along it."""
    # Only differences between scores matter, so subtract each row's largest score first:
    # the exponentials are then at most exp(0) = 1 and cannot overflow to inf.
    shifted = scores - scores.max(dim=-1, keepdim=True).values
    exps = torch.exp(shifted)
    return exps / exps.sum(dim=-1, keepdim=True)  # keepdim: (..., 1) divides each row


def solution_soft_lookup(q: Tensor, k: Tensor, v: Tensor):
    """out, weights of the plain soft lookup of chapter 1 (dot products, no scale, no mask)."""
    scores = q @ k.transpose(-2, -1)  # (B, L, E) @ (B, E, S) -> (B, L, S)
    weights = torch.softmax(scores, dim=-1)  # each query's weights over the keys sum to 1
    out = weights @ v  # (B, L, S) @ (B, S, Ev) -> (B, L, Ev)
    return out, weights


def solution_masked_softmax(scores: Tensor, valid_lens: Tensor | None) -> Tensor:
    """Softmax over the keys (last axis) of scores (B, L, S), ignoring keys >= valid length."""
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    S = scores.shape[-1]
    if valid_lens.dim() == 1:
        valid_lens = valid_lens[:, None]  # (B,) -> (B, 1): one length for all queries
    positions = torch.arange(S, device=scores.device)  # (S,)
    allowed = positions < valid_lens[:, :, None]  # (B, 1|L, 1) vs (S,) -> (B, 1|L, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    # A row with valid length 0 is all -inf, and softmax of it is 0/0 = NaN.
    # Give such rows scores of 0 (any finite value) and zero their weights afterwards.
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, 1|L, 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return weights.masked_fill(~allowed, 0.0)  # padded keys and empty rows -> exactly 0


def solution_scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None):
    """out, weights of attention; mask is bool, True = may attend (every query may attend somewhere)."""
    E = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(E)  # (B, L, E) @ (B, E, S) -> (B, L, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # True = may attend
    weights = torch.softmax(scores, dim=-1)  # each query's weights over the keys sum to 1
    out = weights @ v  # (B, L, S) @ (B, S, Ev) -> (B, L, Ev)
    return out, weights


def solution_causal_mask(L: int) -> Tensor:
    """(L, L) bool, True on and below the diagonal: query i may attend to keys 0..i."""
    return torch.ones(L, L, dtype=torch.bool).tril()


def solution_split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B, H, L, Dh); head h holds features h*Dh:(h+1)*Dh of every token."""
    B, L, D = x.shape
    x = x.reshape(B, L, num_heads, D // num_heads)  # (B, L, D) -> (B, L, H, Dh): cut each token
    return x.transpose(1, 2)  # (B, L, H, Dh) -> (B, H, L, Dh)


def solution_merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, Dh) -> (B, L, H*Dh): the inverse of split_heads."""
    B, H, L, Dh = x.shape
    x = x.transpose(1, 2)  # (B, H, L, Dh) -> (B, L, H, Dh)
    return x.reshape(B, L, H * Dh)  # reshape (not view): the transposed tensor is not contiguous


def solution_transpose_qkv(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B*H, L, Dh); row b*H + h holds head h of sequence b."""
    B, L, D = x.shape
    Dh = D // num_heads
    x = x.reshape(B, L, num_heads, Dh)  # (B, L, D) -> (B, L, H, Dh)
    x = x.transpose(1, 2)  # (B, L, H, Dh) -> (B, H, L, Dh)
    return x.reshape(B * num_heads, L, Dh)  # (B, H, L, Dh) -> (B*H, L, Dh)


def solution_transpose_output(x: Tensor, num_heads: int) -> Tensor:
    """(B*H, L, Dh) -> (B, L, H*Dh): the inverse of transpose_qkv."""
    BH, L, Dh = x.shape
    B = BH // num_heads
    x = x.reshape(B, num_heads, L, Dh)  # (B*H, L, Dh) -> (B, H, L, Dh)
    x = x.transpose(1, 2)  # (B, H, L, Dh) -> (B, L, H, Dh)
    return x.reshape(B, L, num_heads * Dh)  # (B, L, H, Dh) -> (B, L, H*Dh)


def solution_repeat_valid_lens(valid_lens: Tensor, num_heads: int) -> Tensor:
    """Lengths (B,) or (B, L) -> (B*H,) or (B*H, L), matching the rows of transpose_qkv."""
    # transpose_qkv puts the H heads of sequence b in the adjacent rows b*H, ..., b*H + H-1,
    # so each length is repeated in place: [l0, l1] -> [l0, l0, l1, l1] for H = 2.
    return torch.repeat_interleave(valid_lens, num_heads, dim=0)


def solution_multi_head_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, valid_lens=None):
    """Multi-head attention without biases; each W is (out, in) like nn.Linear.weight."""
    B, L, D = query.shape
    S = key.shape[1]
    Dh = D // num_heads
    q = (query @ W_q.T).reshape(B, L, num_heads, Dh).transpose(1, 2)  # (B, L, D) -> (B, H, L, Dh)
    k = (key @ W_k.T).reshape(B, S, num_heads, Dh).transpose(1, 2)  # (B, S, D) -> (B, H, S, Dh)
    v = (value @ W_v.T).reshape(B, S, num_heads, Dh).transpose(1, 2)  # (B, S, D) -> (B, H, S, Dh)
    scores = q @ k.transpose(-2, -1) / math.sqrt(Dh)  # (B, H, L, S): each head scales by its own width
    if valid_lens is not None:
        lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens  # (B, 1) or (B, L)
        allowed = torch.arange(S, device=query.device) < lens[:, None, :, None]  # (B, 1, 1|L, S)
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, L, S)
    out = (weights @ v).transpose(1, 2).reshape(B, L, D)  # (B, H, L, Dh) -> (B, L, H, Dh) -> (B, L, D)
    return out @ W_o.T  # (B, L, D)


def solution_padding_mask(valid_lens: Tensor, S: int) -> Tensor:
    """(B,) lengths -> (B, 1, 1, S) bool, True where key j may be attended to (j < valid_len)."""
    positions = torch.arange(S, device=valid_lens.device)  # (S,)
    allowed = positions[None, :] < valid_lens[:, None]  # (1, S) vs (B, 1) -> (B, S)
    # Broadcasting lines up the last axes: add the head and query axes so that the mask
    # broadcasts against the scores (B, H, L, S) as (B, 1, 1, S).
    return allowed[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def solution_torch_key_padding_mask(valid_lens: Tensor, S: int) -> Tensor:
    """(B,) lengths -> (B, S) bool for nn.MultiheadAttention: True at padding (j >= valid_len)."""
    positions = torch.arange(S, device=valid_lens.device)  # (S,)
    # PyTorch's module: True = may NOT attend, the negation of the course's mask (< becomes >=).
    # One row per sequence; the module broadcasts it over the heads and queries itself.
    return positions[None, :] >= valid_lens[:, None]  # (B, S)
