"""Helpers shared by the chapters' exercise modules: building cases, masking slips.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checker import Case, describe_value

NEG_INF = float("-inf")
FILLS = (NEG_INF, -1e9)  # the two usual ways of masking a score


def randn(gen: torch.Generator, *shape: int, dtype=torch.float64, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def arange(*shape: int, dtype=torch.float64) -> Tensor:
    return torch.arange(math.prod(shape), dtype=dtype).reshape(shape)


def about(names: list[str], args: tuple) -> str:
    return ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))


def case(name: str, names: list[str], *args) -> Case:
    return Case(name, tuple(args), about(names, args))


def lens_per_query(valid_lens: Tensor, L: int, how: str = "interleave") -> Tensor:
    """(B,) or (B, L) lengths -> (B, L); `how="repeat"` is the classic tiling slip."""
    if valid_lens.dim() == 2:
        return valid_lens
    B = valid_lens.shape[0]
    if how == "repeat":
        return valid_lens.repeat(L).reshape(B, L)
    return valid_lens.repeat_interleave(L).reshape(B, L)
