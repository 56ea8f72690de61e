"""mhalib.positional: the sinusoidal formula, learned positions, RoPE and its two pairing conventions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mhalib import (
    LearnedPositions,
    apply_rope,
    apply_rope_interleaved,
    rope_angles,
    rotate_half,
    sinusoidal_positions,
)

# --- sinusoidal -------------------------------------------------------------------------------


def test_sinusoidal_matches_the_formula_entry_by_entry():
    L, D, base = 7, 6, 10000.0
    pe = sinusoidal_positions(L, D, base, dtype=torch.float64)
    assert pe.shape == (L, D) and pe.dtype == torch.float64
    for p in range(L):
        for i in range(D // 2):
            angle = p / base ** (2 * i / D)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_sinusoidal_row_zero_and_base():
    pe = sinusoidal_positions(3, 8)
    assert pe.dtype == torch.float32
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * 4))
    # base only changes the frequencies of pairs i >= 1: the first pair turns at 1 rad per step.
    a, b = sinusoidal_positions(5, 8, base=100.0), sinusoidal_positions(5, 8, base=10000.0)
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_sinusoidal_offset_is_a_linear_map():
    # PE[p + k] = PE[p] @ M_k for one matrix M_k (block-diagonal rotations), whatever p.
    L, D, k = 20, 8, 3
    pe = sinusoidal_positions(L + k, D, dtype=torch.float64)
    M = torch.linalg.lstsq(pe[:L], pe[k:]).solution  # (D, D)
    torch.testing.assert_close(pe[:L] @ M, pe[k:], atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "args, error, text",
    [
        ((4, 5), ValueError, "D must be even"),
        ((4, 0), ValueError, "D must be a positive int"),
        ((-1, 4), ValueError, "L must be a non-negative int"),
        ((4, 4.0), ValueError, "D must be a positive int"),
        ((4, 4, 0.0), ValueError, "base must be a positive number"),
    ],
)
def test_sinusoidal_errors(args, error, text):
    with pytest.raises(error, match=text):
        sinusoidal_positions(*args)


# --- learned positions --------------------------------------------------------------------------


def test_learned_positions_look_up_rows_and_refuse_unseen_positions():
    torch.manual_seed(0)
    table = LearnedPositions(max_len=6, embed_dim=4)
    out = table(torch.arange(6))
    torch.testing.assert_close(out, table.weight)
    assert table(torch.tensor([[0, 5], [2, 2]])).shape == (2, 2, 4)
    with pytest.raises(ValueError, match=r"\[0, max_len\) = \[0, 6\).*from 0 to 6"):
        table(torch.arange(7))
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        table(torch.arange(3.0))


# --- RoPE ---------------------------------------------------------------------------------------


def _rope_by_hand(x, positions, base, pairs):
    """Rotate each pair (a, b) of features by its angle, one scalar at a time."""
    L, Dh = x.shape
    out = x.clone()
    for m in range(L):
        for i, (a, b) in enumerate(pairs):
            theta = positions[m].item() * base ** (-2 * i / Dh)
            c, s = math.cos(theta), math.sin(theta)
            out[m, a] = x[m, a] * c - x[m, b] * s
            out[m, b] = x[m, a] * s + x[m, b] * c
    return out


@pytest.mark.parametrize("Dh", [2, 4, 8])
def test_apply_rope_rotates_half_split_pairs(Dh):
    gen = torch.Generator().manual_seed(Dh)
    x = torch.randn(5, Dh, generator=gen, dtype=torch.float64)
    positions = torch.tensor([0, 1, 2, 7, 100])
    half = [(i, i + Dh // 2) for i in range(Dh // 2)]
    interleaved = [(2 * i, 2 * i + 1) for i in range(Dh // 2)]
    torch.testing.assert_close(apply_rope(x, positions, 500.0), _rope_by_hand(x, positions, 500.0, half))
    torch.testing.assert_close(
        apply_rope_interleaved(x, positions, 500.0), _rope_by_hand(x, positions, 500.0, interleaved)
    )


def test_rope_keeps_norms_and_position_zero():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 8, generator=gen, dtype=torch.float64)  # (B, H, L, Dh)
    out = apply_rope(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :])


def test_default_positions_are_arange_and_explicit_positions_are_used():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 8, generator=gen)
    torch.testing.assert_close(apply_rope(x), apply_rope(x, torch.arange(4)))
    # A decoder's new tokens at positions 10..13 are rotated as positions 10..13, not 0..3.
    shifted = apply_rope(x, torch.arange(10, 14))
    assert not torch.allclose(shifted, apply_rope(x))
    torch.testing.assert_close(shifted[1:2], apply_rope(x[1:2], torch.tensor([11])))


def test_interleaved_is_half_split_after_reordering_features():
    gen = torch.Generator().manual_seed(2)
    Dh = 8
    x = torch.randn(3, 5, Dh, generator=gen, dtype=torch.float64)
    order = torch.cat((torch.arange(0, Dh, 2), torch.arange(1, Dh, 2)))  # 0, 2, 4, 6, 1, 3, 5, 7
    back = torch.argsort(order)
    torch.testing.assert_close(apply_rope_interleaved(x), apply_rope(x[..., order])[..., back])


def test_the_two_pairing_conventions_give_different_scores():
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 6, 8, generator=gen, dtype=torch.float64)
    half = apply_rope(q) @ apply_rope(k).T
    inter = apply_rope_interleaved(q) @ apply_rope_interleaved(k).T
    mixed = apply_rope(q) @ apply_rope_interleaved(k).T
    assert (half - inter).abs().max() > 0.1
    assert (half - mixed).abs().max() > 0.1


def test_rotate_half():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rotate_half(x), torch.tensor([-3.0, -4.0, 1.0, 2.0]))
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x)


def test_rope_angles():
    theta = rope_angles(torch.tensor([0, 1, 3]), 4, base=100.0, dtype=torch.float64)
    torch.testing.assert_close(theta, torch.tensor([[0.0, 0.0], [1.0, 0.1], [3.0, 0.3]], dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 300),
    n=st.integers(0, 300),
    shift=st.integers(-200, 200),
    half_dh=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    interleaved=st.booleans(),
)
def test_rope_scores_depend_only_on_the_offset(m, n, shift, half_dh, seed, interleaved):
    # q at position m and k at position n: the score equals that of positions m + s and n + s.
    rope = apply_rope_interleaved if interleaved else apply_rope
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 2 * half_dh, generator=gen, dtype=torch.float64)
    if m + shift < 0 or n + shift < 0:
        shift = -min(m, n)
    score = (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum()
    moved = (rope(q, torch.tensor([m + shift])) * rope(k, torch.tensor([n + shift]))).sum()
    torch.testing.assert_close(score, moved, atol=1e-9, rtol=1e-9)


def test_rope_float32_close_to_float64():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 8, generator=gen, dtype=torch.float64)
    positions = torch.arange(1000, 1016)
    torch.testing.assert_close(apply_rope(x.float(), positions).double(), apply_rope(x, positions), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "x, positions, error, text",
    [
        (torch.zeros(4, 5), None, ValueError, r"last dimension Dh of x must be even.*got 5"),
        (torch.zeros(4, dtype=torch.float32), None, ValueError, "x must have at least 2 dimensions"),
        (torch.zeros(4, 6, dtype=torch.int64), None, TypeError, "x must be a floating-point tensor"),
        ([[0.0, 1.0]], None, TypeError, "x must be a torch.Tensor"),
        (torch.zeros(4, 6), torch.arange(4.0), TypeError, "positions must be an integer tensor"),
        (torch.zeros(4, 6), torch.arange(3), ValueError, r"positions must have shape \(L,\) = \(4,\).*got \(3,\)"),
        (torch.zeros(2, 4, 6), torch.zeros(2, 4, dtype=torch.long), ValueError, r"positions must have shape \(L,\)"),
    ],
)
def test_rope_errors(x, positions, error, text):
    for rope in (apply_rope, apply_rope_interleaved):
        with pytest.raises(error, match=text):
            rope(x, positions)


def test_rope_base_error():
    with pytest.raises(ValueError, match="base must be a positive number"):
        apply_rope(torch.zeros(2, 4), base=-1.0)
