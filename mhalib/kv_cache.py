"""``KVCache``: the keys and values a decoder has already computed, kept for the next step.

A decoder generates one token at a time. Without a cache, step ``t`` recomputes the keys
and values of all ``t`` tokens so far; with one, it computes them for the new token only,
appends them, and attends over everything kept::

    cache = KVCache()
    out, _ = mha(x[:, :5], x[:, :5], x[:, :5], is_causal=True, cache=cache)  # prompt
    out, _ = mha(x[:, 5:6], x[:, 5:6], x[:, 5:6], is_causal=True, cache=cache)  # one token
    len(cache)  # 6

The cache holds each KV head once, *before* grouped-query attention repeats it for its
query heads, so ``num_kv_heads`` (not ``num_heads``) sets its size: per token and layer
it stores ``2 * num_kv_heads * head_dim`` numbers.

Shapes:
    B batch, Hkv KV heads, S tokens cached so far, Dh head width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .functional import _check_floating, _check_tensor

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of one attention layer, grown by :meth:`update` along the length axis.

    Pass one to ``MultiHeadAttention.forward(..., cache=...)``: the module projects this
    call's keys and values, appends them here and attends over all of them.

    Shapes:
        key, value (B, Hkv, S, Dh), or None while empty; ``len(cache)`` is S.
    """

    def __init__(self) -> None:
        self.key: Tensor | None = None
        self.value: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.key is None else self.key.shape[-2]

    def __repr__(self) -> str:
        if self.key is None:
            return "KVCache(empty)"
        return f"KVCache(key={tuple(self.key.shape)}, value={tuple(self.value.shape)}, dtype={self.key.dtype})"

    @property
    def nbytes(self) -> int:
        """Bytes held: ``2 * B * Hkv * S * Dh * element size`` (keys and values)."""
        return 0 if self.key is None else self.key.nbytes + self.value.nbytes

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.key = self.value = None

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's keys and values; return all of them, old first.

        Shapes:
            key, value (B, Hkv, S_new, Dh) -> key, value (B, Hkv, S + S_new, Dh)
        """
        for name, x in (("key", key), ("value", value)):
            _check_tensor(name, x, ndim=4)
            _check_floating(name, x)
        if key.shape[:3] != value.shape[:3]:
            raise ValueError(
                f"key and value must share (B, Hkv, S_new), got key {tuple(key.shape)} and value {tuple(value.shape)}"
            )
        if self.key is None:
            self.key, self.value = key, value
            return key, value
        for name, new, old in (("key", key, self.key), ("value", value, self.value)):
            if new.shape[:2] != old.shape[:2] or new.shape[3] != old.shape[3] or new.dtype != old.dtype:
                raise ValueError(
                    f"{name} of shape {tuple(new.shape)} and dtype {new.dtype} does not extend the cached "
                    f"{tuple(old.shape)} {old.dtype}: (B, Hkv, *, Dh) and the dtype must match"
                )
        self.key = torch.cat([self.key, key], dim=2)  # (B, Hkv, S, Dh) + (B, Hkv, S_new, Dh)
        self.value = torch.cat([self.value, value], dim=2)
        return self.key, self.value
