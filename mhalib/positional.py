"""Positions: sinusoidal encodings, learned absolute positions and rotary embeddings (RoPE).

Attention by itself is blind to order (permute the tokens and the outputs are permuted
the same way). A model gets order from one of these:

* :func:`sinusoidal_positions` (Vaswani et al. 2017): a fixed (L, D) table added to the
  token embeddings.
* :class:`LearnedPositions` (BERT, MiniLM): a trained (max_len, D) table, added the same
  way; it has nothing for positions at or past ``max_len``.
* :func:`apply_rope` (Su et al. 2021; Llama, SmolLM2): rotate each query and key by an
  angle proportional to its position, so that ``q_m . k_n`` depends only on ``m - n``.

Shapes:
    B batch, H heads, L length, D model width, Dh head width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .functional import _check_floating, _check_tensor

__all__ = [
    "LearnedPositions",
    "apply_rope",
    "apply_rope_interleaved",
    "rope_angles",
    "rotate_half",
    "sinusoidal_positions",
]


# --- argument checks ------------------------------------------------------------------------


def _check_int(name: str, n: object, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int, got {n!r}")
    return n


def _check_even(name: str, n: int, what: str) -> None:
    if n % 2 != 0:
        raise ValueError(f"{name} must be even ({what} come in pairs), got {n}")


def _check_base(base: object) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(f"base must be a positive number, got {base!r}")
    return float(base)


def _check_positions(positions: Tensor | None, L: int, device: torch.device) -> Tensor:
    """``positions`` as an integer (L,) tensor; ``arange(L)`` when None."""
    if positions is None:
        return torch.arange(L, device=device)
    _check_tensor("positions", positions)
    if positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positions must be an integer tensor (token positions), got dtype {positions.dtype}")
    if tuple(positions.shape) != (L,):
        raise ValueError(
            f"positions must have shape (L,) = ({L},), one position per token of x (..., L, Dh), "
            f"got {tuple(positions.shape)}"
        )
    return positions


# --- sinusoidal encodings ---------------------------------------------------------------------


def sinusoidal_positions(
    L: int,
    D: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fixed sinusoidal position table of "Attention Is All You Need".

    ::

        PE[p, 2i]     = sin(p / base**(2i / D))
        PE[p, 2i + 1] = cos(p / base**(2i / D))        for i = 0 .. D/2 - 1

    Row ``p`` is added to the embedding of the token at position ``p``. Column pair
    ``(2i, 2i+1)`` is a point on a circle turning at angular speed ``base**(-2i/D)``, so
    moving by a fixed offset ``k`` is the same rotation for every ``p``: a linear map.
    Computed in float64, returned in ``dtype``.

    Shapes:
        -> (L, D); D must be even
    """
    _check_int("L", L, 0)
    _check_int("D", D, 1)
    _check_even("D", D, "sine and cosine columns")
    base = _check_base(base)
    p = torch.arange(L, dtype=torch.float64, device=device)[:, None]  # (L, 1)
    two_i = torch.arange(0, D, 2, dtype=torch.float64, device=device)  # (D/2,): 0, 2, 4, ...
    angles = p * base ** (-two_i / D)  # (L, 1) * (D/2,) -> (L, D/2)
    pe = torch.empty(L, D, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(angles)  # even columns
    pe[:, 1::2] = torch.cos(angles)  # odd columns
    return pe.to(dtype)


# --- learned absolute positions ----------------------------------------------------------------


class LearnedPositions(nn.Module):
    """A trained table of position vectors, one row per position (BERT's ``position_embeddings``).

    ``forward(positions)`` looks rows up; the result is added to the token embeddings.
    There is no row for a position ``>= max_len``: the model has never seen one, and this
    module says so instead of extrapolating.

    Shapes:
        positions (...,) integer -> (..., D); ``weight`` (max_len, D)
    """

    def __init__(self, max_len: int, embed_dim: int) -> None:
        super().__init__()
        self.max_len = _check_int("max_len", max_len, 1)
        self.embed_dim = _check_int("embed_dim", embed_dim, 1)
        self.embedding = nn.Embedding(max_len, embed_dim)

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, embed_dim={self.embed_dim}"

    def forward(self, positions: Tensor) -> Tensor:
        _check_tensor("positions", positions)
        if positions.dtype == torch.bool or positions.is_floating_point() or positions.is_complex():
            raise TypeError(f"positions must be an integer tensor (token positions), got dtype {positions.dtype}")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.max_len):
            raise ValueError(
                f"positions must lie in [0, max_len) = [0, {self.max_len}): learned positions have "
                f"no vector for a position they were not trained on, got positions from "
                f"{int(positions.min())} to {int(positions.max())}"
            )
        return self.embedding(positions)  # (...,) -> (..., D)


# --- rotary position embeddings -----------------------------------------------------------------


def rope_angles(positions: Tensor, Dh: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """The rotation angles of RoPE: ``theta[m, i] = positions[m] * base**(-2i / Dh)``.

    Pair ``i`` of the token at position ``m`` turns by ``theta[m, i]``; low ``i`` turn
    fast, high ``i`` slowly. Computed in float64, returned in ``dtype``.

    Shapes:
        positions (L,) integer -> (L, Dh/2)
    """
    _check_int("Dh", Dh, 1)
    _check_even("Dh", Dh, "RoPE rotates features")
    base = _check_base(base)
    _check_tensor("positions", positions, ndim=1)
    positions = _check_positions(positions, positions.shape[0], positions.device)
    two_i = torch.arange(0, Dh, 2, dtype=torch.float64, device=positions.device)  # (Dh/2,)
    inv_freq = base ** (-two_i / Dh)  # (Dh/2,): 1, ..., close to 1/base
    return (positions.to(torch.float64)[:, None] * inv_freq).to(dtype)  # (L, 1) * (Dh/2,) -> (L, Dh/2)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis (Llama-style RoPE code).

    With pairs ``(i, i + Dh/2)``, ``x * cos + rotate_half(x) * sin`` rotates every pair by
    its angle.

    Shapes:
        x (..., Dh) -> (..., Dh); Dh even
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (..., Dh) -> 2 x (..., Dh/2)
    return torch.cat((-x2, x1), dim=-1)  # (..., Dh)


def _check_rope_input(x: Tensor, positions: Tensor | None, base: float) -> tuple[Tensor, Tensor]:
    _check_tensor("x", x, min_ndim=2)
    _check_floating("x", x)
    L, Dh = x.shape[-2], x.shape[-1]
    _check_even("the last dimension Dh of x", Dh, "RoPE rotates features")
    _check_base(base)
    positions = _check_positions(positions, L, x.device)
    # float64 input keeps float64 angles; lower precisions get float32 angles (as Llama code).
    angle_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = rope_angles(positions, Dh, base, dtype=angle_dtype)  # (L, Dh/2)
    return x, theta


def apply_rope(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotary position embedding with *half-split* pairs ``(i, i + Dh/2)`` (Llama, SmolLM2).

    ::

        theta[m, i] = positions[m] * base**(-2i / Dh)          # (L, Dh/2)
        cos, sin    = cos(cat(theta, theta)), sin(cat(theta, theta))   # (L, Dh)
        out         = x * cos + rotate_half(x) * sin

    Feature ``i`` and feature ``i + Dh/2`` form a 2-D point that is rotated by
    ``theta[m, i]``. Apply it to queries and keys (never to values): then
    ``apply_rope(q)[m] . apply_rope(k)[n]`` depends on the positions only through
    ``m - n``. ``positions`` default to ``0 .. L-1``; a decoder that appends tokens
    passes their true positions. The paper pairs ``(2i, 2i + 1)`` instead
    (:func:`apply_rope_interleaved`); a checkpoint trained with one convention gives wrong
    scores, and no error, under the other.

    Shapes:
        x (..., L, Dh), Dh even; positions (L,) integer -> (..., L, Dh)
    """
    x, theta = _check_rope_input(x, positions, base)
    theta = torch.cat((theta, theta), dim=-1)  # (L, Dh/2) -> (L, Dh): angle i for i and i + Dh/2
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin  # (..., L, Dh)


def apply_rope_interleaved(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotary position embedding with the paper's *interleaved* pairs ``(2i, 2i + 1)``.

    Same angles as :func:`apply_rope`; only which two features form a pair differs.
    ``apply_rope_interleaved(x)`` equals ``apply_rope`` applied to ``x`` with its features
    reordered ``0, 2, 4, ..., 1, 3, 5, ...`` (and reordered back).

    Shapes:
        x (..., L, Dh), Dh even; positions (L,) integer -> (..., L, Dh)
    """
    x, theta = _check_rope_input(x, positions, base)
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)  # (L, Dh/2)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., L, Dh) -> 2 x (..., L, Dh/2)
    out_even = x_even * cos - x_odd * sin
    out_odd = x_even * sin + x_odd * cos
    return torch.stack((out_even, out_odd), dim=-1).flatten(-2)  # (..., L, Dh/2, 2) -> (..., L, Dh)
