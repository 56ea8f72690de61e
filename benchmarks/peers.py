"""The anchors' own attention classes, re-typed here for the benchmark (bench_peers.py).

Each class follows the published one's computation step by step (the same operations in
the same order, the same layouts, the same mask trick), written in our words, with a
comment naming the source. Only what the benchmark needs was changed, and each change is
marked "CHANGED:". ``copy_weights`` gives every peer the weights of one
``mhalib.MultiHeadAttention``, so the benchmark can check that all of them compute the
same function before it times them.

Shapes: B batch, T tokens (L = S = T here), D = d_model, H heads, Dh = D // H.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mhalib

# --- LLMs-from-scratch (Raschka), chapter 3 ---------------------------------------------


class LLMsCh03MultiHeadAttention(nn.Module):
    """After rasbt/LLMs-from-scratch, ch03/01_main-chapter-code, class ``MultiHeadAttention``.

    Three separate Linear layers; explicit scores; the causal mask is a registered
    (context_length, context_length) buffer of ones above the diagonal, applied with
    ``masked_fill_(-inf)``; softmax of scores / sqrt(Dh); dropout; weights @ values.
    Causal self-attention only (no padding mask).
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: Tensor) -> Tensor:
        b, T, _ = x.shape
        keys, queries, values = self.W_key(x), self.W_query(x), self.W_value(x)  # (B, T, D)
        keys = keys.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        queries = queries.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)  # (B, H, T, T)
        scores.masked_fill_(self.mask.bool()[:T, :T], -torch.inf)
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))
        context = (weights @ values).transpose(1, 2)  # (B, T, H, Dh)
        return self.out_proj(context.contiguous().view(b, T, self.d_out))  # (B, T, D)


class LLMsPackedSDPAAttention(nn.Module):
    """After rasbt/LLMs-from-scratch, ch03/02_bonus_efficient-multihead-attention,
    class ``MHAPyTorchScaledDotProduct``.

    One packed ``qkv`` Linear of width 3D; view (B, T, 3, H, Dh), permute to
    (3, B, H, T, Dh), unpack; ``F.scaled_dot_product_attention(is_causal=True)``;
    transpose back, ``contiguous``, output Linear. Causal self-attention only.
    """

    def __init__(self, d_in: int, d_out: int, num_heads: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.num_heads, self.context_length = num_heads, context_length
        self.head_dim, self.d_out = d_out // num_heads, d_out
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.proj = nn.Linear(d_out, d_out)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        b, T, _ = x.shape
        qkv = self.qkv(x).view(b, T, 3, self.num_heads, self.head_dim)  # (B, T, 3D) -> (B, T, 3, H, Dh)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        dropout_p = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=None, dropout_p=dropout_p, is_causal=True)
        context = context.transpose(1, 2).contiguous().view(b, T, self.d_out)  # (B, H, T, Dh) -> (B, T, D)
        return self.proj(context)


# --- Dive into Deep Learning (d2l), section "Multi-Head Attention" ------------------------


def _d2l_masked_softmax(X: Tensor, valid_lens: Tensor | None) -> Tensor:
    """After d2l-ai/d2l-en ``masked_softmax`` (with its ``_sequence_mask``): padded keys get
    -1e6 before the softmax. valid_lens (B*H,) or (B*H, L)."""
    if valid_lens is None:
        return F.softmax(X, dim=-1)
    shape = X.shape
    if valid_lens.dim() == 1:
        valid_lens = torch.repeat_interleave(valid_lens, shape[1])
    else:
        valid_lens = valid_lens.reshape(-1)
    X = X.reshape(-1, shape[-1])  # (B*H*L, S)
    keep = torch.arange(shape[-1], dtype=torch.float32, device=X.device)[None, :] < valid_lens[:, None]
    X[~keep] = -1e6  # d2l's fill value: a large negative number, not -inf
    return F.softmax(X.reshape(shape), dim=-1)


class D2LMultiHeadAttention(nn.Module):
    """After d2l-ai/d2l-en, chapter_attention-mechanisms-and-transformers/multihead-attention,
    class ``MultiHeadAttention`` (PyTorch version) with its ``DotProductAttention``.

    Heads folded into the batch axis (``transpose_qkv``: (B, T, D) -> (B*H, T, Dh)),
    ``torch.bmm`` scores / sqrt(Dh), ``masked_softmax`` with ``valid_lens`` repeated
    per head (``repeat_interleave``), dropout, ``bmm`` with the values, ``transpose_output``.
    Masks are lengths only: padding (B,) or, for a causal decoder, (B, L) = 1..T.
    CHANGED: ``nn.LazyLinear`` -> ``nn.Linear`` with explicit input sizes (same maths; the
    lazy layers would need a first call before their weights exist).
    """

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = nn.Dropout(dropout)
        self.W_q = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def transpose_qkv(self, X: Tensor) -> Tensor:
        X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)  # (B, T, H, Dh)
        X = X.permute(0, 2, 1, 3)  # (B, H, T, Dh)
        return X.reshape(-1, X.shape[2], X.shape[3])  # (B*H, T, Dh), a copy

    def transpose_output(self, X: Tensor) -> Tensor:
        X = X.reshape(-1, self.num_heads, X.shape[1], X.shape[2])  # (B, H, T, Dh)
        X = X.permute(0, 2, 1, 3)
        return X.reshape(X.shape[0], X.shape[1], -1)  # (B, T, D)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, valid_lens: Tensor | None) -> Tensor:
        queries = self.transpose_qkv(self.W_q(queries))
        keys = self.transpose_qkv(self.W_k(keys))
        values = self.transpose_qkv(self.W_v(values))
        if valid_lens is not None:
            valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
        d = queries.shape[-1]  # DotProductAttention
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)  # (B*H, T, T)
        weights = _d2l_masked_softmax(scores, valid_lens)
        output = torch.bmm(self.dropout(weights), values)  # (B*H, T, Dh)
        return self.W_o(self.transpose_output(output))


# --- The Annotated Transformer (harvardnlp) ------------------------------------------------


def _annotated_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, dropout: nn.Module | None):
    """After harvardnlp/annotated-transformer ``attention``: scores / sqrt(d_k),
    ``masked_fill(mask == 0, -1e9)``, softmax, dropout, @ value; returns the weights too."""
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = scores.softmax(dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value), p_attn


def annotated_subsequent_mask(size: int) -> Tensor:
    """After harvardnlp/annotated-transformer ``subsequent_mask``: (1, T, T), True = may attend."""
    return torch.triu(torch.ones(1, size, size), diagonal=1).type(torch.uint8) == 0


class AnnotatedMultiHeadedAttention(nn.Module):
    """After harvardnlp/annotated-transformer (the notebook's ``MultiHeadedAttention``).

    Four Linear layers made by ``clones`` (deep copies) in a ModuleList; per-layer
    view (B, T, H, d_k) + transpose(1, 2); the module's ``attention`` function; the
    weights kept on ``self.attn`` (a side effect, as there); ``del`` of q, k, v;
    transpose + contiguous + view, last Linear. Mask (B, 1, S) padding or (1|B, L, S)
    causal, unsqueezed to broadcast over heads.
    """

    def __init__(self, h: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.d_k, self.h = d_model // h, h
        self.linears = nn.ModuleList([copy.deepcopy(nn.Linear(d_model, d_model)) for _ in range(4)])
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            mask = mask.unsqueeze(1)  # the same mask for every head
        nbatches = query.size(0)
        query, key, value = [
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2) for lin, x in zip(self.linears, (query, key, value))
        ]
        x, self.attn = _annotated_attention(query, key, value, mask=mask, dropout=self.dropout)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        del query, key, value
        return self.linears[-1](x)


# --- the same weights everywhere --------------------------------------------------------


def copy_weights(mha: mhalib.MultiHeadAttention, peer: nn.Module) -> nn.Module:
    """Give ``peer`` the four projections of ``mha`` (all with biases); returns ``peer``."""
    q, k, v, o = mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj
    if isinstance(peer, LLMsCh03MultiHeadAttention):
        pairs = [(peer.W_query, q), (peer.W_key, k), (peer.W_value, v), (peer.out_proj, o)]
    elif isinstance(peer, D2LMultiHeadAttention):
        pairs = [(peer.W_q, q), (peer.W_k, k), (peer.W_v, v), (peer.W_o, o)]
    elif isinstance(peer, AnnotatedMultiHeadedAttention):
        pairs = list(zip(peer.linears, (q, k, v, o)))
    elif isinstance(peer, LLMsPackedSDPAAttention):
        with torch.no_grad():
            peer.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))  # (3D, D)
            peer.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        pairs = [(peer.proj, o)]
    else:
        raise TypeError(f"no weight mapping for {type(peer).__name__}")
    with torch.no_grad():
        for theirs, ours in pairs:
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return peer
