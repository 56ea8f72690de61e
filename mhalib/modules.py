"""``MultiHeadAttention``: a thin module that owns the four projections and calls the functions.

Shapes:
    B batch, H heads, L query length, S key/value length, D = embed_dim, Dh = D // H,
    Hkv = num_kv_heads (grouped-query attention; H by default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import (
    _check_num_heads,
    check_attention_inputs,
    combined_mask,
    merge_heads,
    packed_linear,
    scaled_dot_product_attention,
    split_heads,
)
from .kv_cache import KVCache

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first, with the course's mask convention (True = may attend).

    ::

        q, k, v = q_proj(query), k_proj(key), v_proj(value)        # (B, L|S, D)
        q, k, v = split_heads(q), split_heads(k), split_heads(v)   # (B, H, L|S, Dh)
        out_h, weights = attention(q, k, v, mask)                  # (B, H, L, Dh), (B, H, L, S)
        out = out_proj(merge_heads(out_h))                         # (B, L, D)

    Shapes:
        query (B, L, embed_dim), key (B, S, kdim), value (B, S, vdim)
        attn_mask: bool (True = may attend) or float (added), shaped (L, S), (B, L, S),
            (B*H, L, S) as in ``torch.nn.MultiheadAttention``, or anything that
            broadcasts to (B, H, L, S)
        valid_lens: (B,) or (B, L) integer lengths; keys at positions >= length are padding
        -> out (B, L, embed_dim), weights (B, H, L, S) per head, or None

    Grouped-query attention: with ``num_kv_heads`` = Hkv < H, ``k_proj`` and ``v_proj`` make
    only Hkv heads of width Dh, and query head ``h`` uses KV head ``h // (H // Hkv)``
    (:func:`mhalib.repeat_kv`). Hkv = H is plain multi-head attention, Hkv = 1
    multi-query attention.

    Decoding: ``cache=KVCache()`` appends this call's keys and values, per KV head, to the
    cache and attends over all of them; ``is_causal=True`` then aligns the mask
    lower-right (the new queries are the last positions). ``rope``, a function
    ``rope(x, positions)`` such as ``mhalib.apply_rope``, rotates q and k by their
    positions before k is cached; with a cache the new tokens' positions start at
    ``len(cache)``.

    With ``need_weights=False`` the forward pass calls PyTorch's fused
    ``scaled_dot_product_attention`` on (B, H, L, Dh) tensors and returns ``None`` for
    the weights. On CPU, PyTorch 2.13 then picks a flash-attention kernel that does not
    store the (L, S) weights, except with dropout in training (``dropout > 0`` and
    ``module.train()``): there it falls back to its math path, which builds the scores
    and weights in memory as the explicit path does and only does not return them
    (tests/test_fused_path.py checks which kernel runs). With ``need_weights=True`` the
    module runs the explicit :func:`mhalib.scaled_dot_product_attention`, whose weights
    you can look at (about 4 GiB of them at B=4, H=8, L=S=4096 in float32).

    Packed projections: when ``query is key is value`` (self-attention) the three input
    projections run as one matrix product with W_q, W_k, W_v stacked, as
    ``torch.nn.MultiheadAttention``'s ``in_proj_weight`` does; when only ``key is value``
    (cross-attention) W_k and W_v run as one; both only from ``PACK_MIN_TOKENS`` = 2048
    tokens (B * S) on, below which stacking the weights costs more than it saves (the
    decoding step with a cache, one token, keeps three products). The parameters stay
    the three ``nn.Linear`` modules (``state_dict``, ``from_torch``, their gradients are
    unchanged): the stack is concatenated on every call, so it is never stale. Equal but distinct tensors
    (``x`` and ``x.clone()``) take the three separate products; both give the same
    outputs and gradients up to rounding (tests/test_packed_projection.py).

    Dropout (``dropout=p``) acts on the weights, after the softmax, and only in training
    mode: each weight is zeroed with probability p and the others are divided by
    ``1 - p``, so a row no longer sums to 1. ``eval()`` turns it off.

    Initialisation: every projection gets Xavier-uniform weights (variance
    ``2 / (fan_in + fan_out)``, so ``1 / D`` for a (D, D) weight) and zero biases, so an
    input of variance 1 gives queries, keys and values of variance about 1, which is what
    the ``1 / sqrt(Dh)`` scale assumes. ``nn.Linear``'s default would give about 1/3.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        num_kv_heads: int | None = None,
        rope: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        _check_num_heads(num_heads, embed_dim, "embed_dim")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if isinstance(num_kv_heads, bool) or not isinstance(num_kv_heads, int) or num_kv_heads < 1:
            raise ValueError(f"num_kv_heads must be a positive int or None, got {num_kv_heads!r}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        if rope is not None and not callable(rope):
            raise TypeError(f"rope must be a function rope(x, positions) or None, got {type(rope).__name__}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.rope = rope
        self.dropout = dropout
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)  # W_q
        kv_dim = num_kv_heads * self.head_dim  # = embed_dim unless grouped-query
        self.k_proj = nn.Linear(self.kdim, kv_dim, bias=bias)  # W_k
        self.v_proj = nn.Linear(self.vdim, kv_dim, bias=bias)  # W_v
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)  # W_o
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Xavier-uniform weights and zero biases for all four projections. Not exactly
        # torch.nn.MultiheadAttention's: it applies Xavier to the packed (3D, D)
        # in_proj_weight (variance 1/(2D) per weight, not 1/D) and leaves out_proj with
        # nn.Linear's default (1/(3D)). Weights copied with from_torch match it exactly.
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def extra_repr(self) -> str:
        gqa = f", num_kv_heads={self.num_kv_heads}" if self.num_kv_heads != self.num_heads else ""
        # A rope that is an nn.Module is printed as a child module already.
        named = self.rope is not None and not isinstance(self.rope, nn.Module)
        rope = f", rope={getattr(self.rope, '__name__', type(self.rope).__name__)}" if named else ""
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{gqa}, head_dim={self.head_dim}, "
            f"dropout={self.dropout}, kdim={self.kdim}, vdim={self.vdim}{rope}"
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        valid_lens: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = True,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        check_attention_inputs(query, key, value, self.embed_dim, self.kdim, self.vdim)
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be an mhalib.KVCache or None, got {type(cache).__name__}")
        B, L, _ = query.shape
        H, Hkv = self.num_heads, self.num_kv_heads
        past = 0 if cache is None else len(cache)  # tokens already cached

        q, k, v = self._project(query, key, value)  # (B, L, D), (B, S, Hkv*Dh), (B, S, Hkv*Dh)
        q = split_heads(q, H)  # (B, L, D) -> (B, H, L, Dh)
        k = split_heads(k, Hkv)  # (B, S, Hkv*Dh) -> (B, Hkv, S, Dh)
        v = split_heads(v, Hkv)  # (B, S, Hkv*Dh) -> (B, Hkv, S, Dh)
        if self.rope is not None:  # positions continue after the cached tokens
            q = self.rope(q, torch.arange(past, past + L, device=q.device))
            k = self.rope(k, torch.arange(past, past + k.shape[2], device=k.device))
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, S, Dh) -> (B, Hkv, past + S, Dh)
            # The new queries are the last L positions: causal is lower-right, and one
            # query at the end may see every key, so it needs no mask at all.
            is_causal = is_causal and L > 1
        S = k.shape[2]

        lower_right = cache is not None
        mask = combined_mask(
            attn_mask, valid_lens, is_causal, num_heads=H, batch=B, L=L, S=S, dtype=q.dtype, device=q.device,
            lower_right=lower_right,
        )  # None (no mask, or causal only), or broadcastable to (B, H, L, S)
        dropout_p = self.dropout if self.training else 0.0
        gqa = Hkv != H  # query head h uses KV head h // (H // Hkv)
        if need_weights:
            causal_only = is_causal and mask is None
            out, weights = scaled_dot_product_attention(
                q, k, v, mask, dropout_p, is_causal=causal_only, enable_gqa=gqa
            )  # (B, H, L, Dh), (B, H, L, S)
        else:
            out, weights = self._fused_attention(q, k, v, mask, is_causal, dropout_p, gqa), None
        out = self.out_proj(merge_heads(out))  # (B, H, L, Dh) -> (B, L, D) -> (B, L, D)
        return out, weights

    # --- helpers of forward ----------------------------------------------------------

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q_proj(query), k_proj(key), v_proj(value)`` in as few matrix products as the inputs allow.

        Self-attention (``query is key is value``): one product with W_q, W_k, W_v stacked,
        (D + 2*Hkv*Dh, D). Cross-attention with ``key is value``: ``q_proj(query)``, then one
        product with W_k, W_v stacked. Otherwise, and for fewer than ``PACK_MIN_TOKENS``
        tokens (B * S), three. The stack is made afresh on every
        call from the three ``nn.Linear`` modules (:func:`mhalib.functional.packed_linear`),
        so it is never stale after an optimiser step and the gradients land on their
        weights; the outputs are those of the three products up to rounding.

        Shapes:
            query (B, L, D), key (B, S, kdim), value (B, S, vdim)
            -> q (B, L, D), k (B, S, Hkv*Dh), v (B, S, Hkv*Dh)
        """
        q_proj, k_proj, v_proj = self.q_proj, self.k_proj, self.v_proj
        many_tokens = key.shape[0] * key.shape[1] >= PACK_MIN_TOKENS  # B * S rows to multiply
        if key is value and many_tokens and _packable(k_proj, v_proj):
            if query is key and _packable(q_proj, k_proj):
                projections = (q_proj, k_proj, v_proj)
                q, k, v = packed_linear(query, [p.weight for p in projections], [p.bias for p in projections])
                return q, k, v  # views of one (B, L, D + 2*Hkv*Dh) product
            k, v = packed_linear(key, [k_proj.weight, v_proj.weight], [k_proj.bias, v_proj.bias])
            return q_proj(query), k, v
        return q_proj(query), k_proj(key), v_proj(value)

    def _fused_attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, gqa: bool
    ) -> Tensor:
        """PyTorch's fused kernel on 4-D (B, H, L, Dh) tensors (3-D input falls back to a slow path)."""
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, enable_gqa=gqa)
        # Since PyTorch 2.5 the fused kernel gives a row with nothing to attend to a zero output,
        # as the explicit path does (tests/test_module.py checks both paths).
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa)

    # --- conversion to and from torch.nn.MultiheadAttention -----------------------------

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of a ``torch.nn.MultiheadAttention`` that gives the same outputs.

        PyTorch packs W_q, W_k, W_v into one ``in_proj_weight`` of shape (3*D, D) when
        query, key and value have the same width; this splits it into three. Our module
        is batch first whatever ``module.batch_first`` says. Remember that PyTorch's
        boolean masks mean the opposite (True = may *not* attend).
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be a torch.nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported by mhalib.MultiHeadAttention")
        has_bias = module.in_proj_bias is not None
        mine = cls(module.embed_dim, module.num_heads, module.dropout, has_bias, module.kdim, module.vdim)
        # Cast before copying: copy_ into float32 parameters would round float64 weights.
        mine = mine.to(device=module.out_proj.weight.device, dtype=module.out_proj.weight.dtype)
        D = module.embed_dim
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.detach().split(D)  # (3D, D) -> 3 x (D, D)
        else:
            w_q, w_k, w_v = (w.detach() for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight))
        biases = module.in_proj_bias.detach().split(D) if has_bias else (None, None, None)
        with torch.no_grad():
            for proj, w, b in zip((mine.q_proj, mine.k_proj, mine.v_proj), (w_q, w_k, w_v), biases):
                proj.weight.copy_(w)
                if b is not None:
                    proj.bias.copy_(b)
            mine.out_proj.weight.copy_(module.out_proj.weight)
            if has_bias:
                mine.out_proj.bias.copy_(module.out_proj.bias)
        return mine.train(module.training)

    def to_torch(self) -> nn.MultiheadAttention:
        """A ``torch.nn.MultiheadAttention(batch_first=True)`` with the same weights.

        Only for plain multi-head attention: PyTorch's module has neither grouped KV
        heads nor rotary positions, so ``num_kv_heads != num_heads`` or a ``rope`` raise.
        """
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"to_torch needs num_kv_heads == num_heads: torch.nn.MultiheadAttention has no grouped-query "
                f"attention, and this module has num_kv_heads={self.num_kv_heads}, num_heads={self.num_heads}"
            )
        if self.rope is not None:
            raise ValueError("to_torch needs rope=None: torch.nn.MultiheadAttention has no rotary positions")
        has_bias = self.q_proj.bias is not None
        dtype = self.q_proj.weight.dtype
        theirs = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, self.dropout, has_bias, kdim=self.kdim, vdim=self.vdim, batch_first=True, dtype=dtype
        )
        with torch.no_grad():
            if theirs._qkv_same_embed_dim:
                theirs.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            else:
                theirs.q_proj_weight.copy_(self.q_proj.weight)
                theirs.k_proj_weight.copy_(self.k_proj.weight)
                theirs.v_proj_weight.copy_(self.v_proj.weight)
            if has_bias:
                theirs.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
                theirs.out_proj.bias.copy_(self.out_proj.bias)
            theirs.out_proj.weight.copy_(self.out_proj.weight)
        return theirs.train(self.training)


def _packable(first: nn.Module, second: nn.Module) -> bool:
    """Whether the two projections may be run as one product instead of being called.

    Only plain ``nn.Linear`` layers (their own ``forward``; weights that are ordinary
    tensors of one dtype and device; biases on both or neither) with no hooks: a hook, a
    subclass with its own forward or a tensor subclass (``DTensor`` after
    ``parallelize_module``, chapter 10) expects the module to be called, so it is called.
    """
    layers = (first, second)
    if not all(isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward for m in layers):
        return False
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in layers):
        return False
    if any(getattr(nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        return False
    w1, w2 = first.weight, second.weight
    if not (type(w1) in _PLAIN and type(w2) in _PLAIN and w1.dtype == w2.dtype and w1.device == w2.device):
        return False
    return (first.bias is None) == (second.bias is None)


# Stacking the weights copies them (D + 2*Hkv*Dh rows of D numbers) on every call, whatever
# the number of tokens; one product instead of three saves a few per cent of the product,
# which grows with the tokens. Measured on the course's shared 2-core CPU (D=256, float32,
# benchmarks/profile_fused.py --crossover): packing was 1.9-3.6x slower at 1 token (the
# KV-cache decoding step), 1.2-1.4x at 16-64 tokens, and within the noise (0.8-1.1x) from
# 1024 on; a quieter trial at 4096 tokens gave 99 ms packed against 114 ms. So only
# B * S >= 2048 tokens are packed.
PACK_MIN_TOKENS = 2048

_PLAIN = (Tensor, nn.Parameter)
# Hooks registered for every module (nn.modules.module.register_module_forward_hook & co.).
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)
