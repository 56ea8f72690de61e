"""``Decoder``: a Llama-style decoder-only language model built from mhalib parts.

The architecture of Llama (Touvron et al. 2023) and SmolLM2, with the names of the
course::

    x = embed(input_ids)                                     # (B, L) -> (B, L, D)
    for block in blocks:                                     # pre-norm blocks
        n = norm1(x)
        x = x + attention(n, n, n, is_causal=True, cache=...)  # GQA, RoPE on q and k
        x = x + ffn(norm2(x))                                # SwiGLU
    logits = norm(x) @ embed.weight.T                        # tied: (B, L, D) -> (B, L, V)

Submodules: ``embed`` (nn.Embedding), ``blocks.{i}.norm1`` / ``norm2`` (:class:`RMSNorm`),
``blocks.{i}.attention`` (:class:`mhalib.MultiHeadAttention` with ``num_kv_heads`` and
``rope``, no biases), ``blocks.{i}.ffn`` (:class:`SwiGLU`: ``gate_proj``, ``up_proj``,
``down_proj``), ``norm`` (the final RMSNorm). The output head is the embedding matrix
itself (tied embeddings), so the model has no separate ``lm_head``.

Shapes:
    B batch, L new tokens, S tokens attended to (cached + new), D = embed_dim,
    H query heads, Hkv KV heads, Dh = D // H, F = ffn_dim, V = vocab_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import _check_tensor
from .kv_cache import KVCache
from .modules import MultiHeadAttention
from .positional import apply_rope

__all__ = ["Decoder", "DecoderBlock", "RMSNorm", "Rotary", "SwiGLU"]


def _check_positive_int(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return n


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang and Sennrich 2019), as in Llama.

    ::

        out = x / sqrt(mean(x**2, over D) + eps) * weight     # no mean subtracted, no bias

    Shapes:
        x (..., D) -> (..., D)
    """

    def __init__(self, embed_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(_check_positive_int("embed_dim", embed_dim)))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        rms = x.pow(2).mean(dim=-1, keepdim=True).add(self.eps).rsqrt()  # (..., D) -> (..., 1)
        return x * rms * self.weight


class SwiGLU(nn.Module):
    """The gated MLP of Llama (Shazeer 2020): a SiLU gate times a linear "up" branch.

    ::

        out = down_proj(silu(gate_proj(x)) * up_proj(x))     # (..., D) -> (..., F) -> (..., D)

    Shapes:
        x (..., D) -> (..., D)
    """

    def __init__(self, embed_dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(embed_dim, ffn_dim, bias=False)  # (D -> F)
        self.up_proj = nn.Linear(embed_dim, ffn_dim, bias=False)  # (D -> F)
        self.down_proj = nn.Linear(ffn_dim, embed_dim, bias=False)  # (F -> D)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (..., D) -> (..., D)


class Rotary(nn.Module):
    """The ``rope`` of a decoder's attention: :func:`mhalib.apply_rope` (half-split) at one base.

    Shapes:
        x (B, H, L, Dh), positions (L,) -> (B, H, L, Dh)
    """

    def __init__(self, base: float = 10000.0) -> None:
        super().__init__()
        self.base = float(base)

    def extra_repr(self) -> str:
        return f"base={self.base:g}"

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        return apply_rope(x, positions, self.base)


class DecoderBlock(nn.Module):
    """One pre-norm decoder layer: causal GQA self-attention with RoPE, then SwiGLU.

    ::

        n = norm1(x)
        x = x + attention(n, n, n, is_causal=True, cache=cache)
        x = x + ffn(norm2(x))

    Shapes:
        x (B, L, D) -> out (B, L, D), weights (B, H, L, S) or None
    """

    def __init__(
        self, embed_dim: int, num_heads: int, num_kv_heads: int, ffn_dim: int, rope_base: float = 10000.0, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(embed_dim, eps)
        self.attention = MultiHeadAttention(
            embed_dim, num_heads, bias=False, num_kv_heads=num_kv_heads, rope=Rotary(rope_base)
        )
        self.norm2 = RMSNorm(embed_dim, eps)
        self.ffn = SwiGLU(embed_dim, _check_positive_int("ffn_dim", ffn_dim))

    def forward(self, x: Tensor, cache: KVCache | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        n = self.norm1(x)
        h, weights = self.attention(n, n, n, is_causal=True, need_weights=need_weights, cache=cache)
        x = x + h  # (B, L, D)
        return x + self.ffn(self.norm2(x)), weights


class Decoder(nn.Module):
    """A decoder-only language model: embedding, pre-norm blocks, final RMSNorm, tied output head.

    ``forward(input_ids, caches=None, need_weights=False)`` returns the next-token logits of
    every position and, when asked, the attention weights of every layer and head. With
    ``caches`` (one :class:`mhalib.KVCache` per layer, from :meth:`new_caches`), the call
    appends its tokens' keys and values and ``input_ids`` are the *new* tokens only: their
    positions continue after the cached ones.

    Shapes:
        input_ids (B, L) integer -> logits (B, L, V),
        weights (num_layers, B, H, L, S) or None, S = cached + L
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int,
        num_layers: int,
        ffn_dim: int,
        rope_base: float = 10000.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(_check_positive_int("vocab_size", vocab_size), embed_dim)
        self.blocks = nn.ModuleList(
            DecoderBlock(embed_dim, num_heads, num_kv_heads, ffn_dim, rope_base, eps)
            for _ in range(_check_positive_int("num_layers", num_layers))
        )
        self.norm = RMSNorm(embed_dim, eps)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def new_caches(self) -> list[KVCache]:
        """One empty cache per layer."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self, input_ids: Tensor, caches: list[KVCache] | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        self._check_ids(input_ids)
        if caches is not None and (not isinstance(caches, (list, tuple)) or len(caches) != self.num_layers):
            got = f"{len(caches)} items" if isinstance(caches, (list, tuple)) else type(caches).__name__
            raise ValueError(f"caches must be a list of {self.num_layers} KVCache, one per layer (model.new_caches()), got {got}")
        x = self.embed(input_ids)  # (B, L) -> (B, L, D)
        all_weights = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, None if caches is None else caches[i], need_weights)
            all_weights.append(weights)
        logits = self.norm(x) @ self.embed.weight.T  # tied head: (B, L, D) @ (D, V) -> (B, L, V)
        return logits, torch.stack(all_weights) if need_weights else None

    def _check_ids(self, input_ids: Tensor) -> None:
        _check_tensor("input_ids", input_ids, ndim=2)
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be an integer tensor of token ids, got dtype {input_ids.dtype}")
        V = self.embed.num_embeddings
        if input_ids.numel() and not (0 <= int(input_ids.min()) and int(input_ids.max()) < V):
            raise ValueError(f"input_ids must be token ids in [0, {V}), got values in [{int(input_ids.min())}, {int(input_ids.max())}]")

    @torch.no_grad()
    def generate(
        self, input_ids: Tensor, max_new_tokens: int, use_cache: bool = True, eos_token_id: int | None = None
    ) -> Tensor:
        """Greedy decoding: append the most likely next token, ``max_new_tokens`` times.

        With ``use_cache`` the prompt runs once and every later step feeds only the newest
        token (its keys and values are appended to the caches); without, every step runs
        the whole sequence again. Both give the same tokens. Stops early after
        ``eos_token_id`` when given.

        Shapes:
            input_ids (1, L) -> (1, L + n), n <= max_new_tokens
        """
        self._check_ids(input_ids)
        if input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be one sequence (1, L), got shape {tuple(input_ids.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        ids = input_ids
        caches = self.new_caches() if use_cache else None
        step_ids = ids  # with a cache: the prompt first, then one token at a time
        for _ in range(max_new_tokens):
            logits, _ = self(step_ids if use_cache else ids, caches=caches)  # (1, L_step, V)
            next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
            ids = torch.cat([ids, next_id], dim=1)  # (1, L) -> (1, L + 1)
            step_ids = next_id
            if eos_token_id is not None and int(next_id) == eos_token_id:
                break
        return ids
