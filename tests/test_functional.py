"""mhalib.functional against PyTorch: scaled_dot_product_attention, masked_softmax and the masks.

Shapes: B batch, H heads, L query length, S key length, E query/key width, Ev value width.
Our boolean masks are True = may attend, exactly like torch's F.scaled_dot_product_attention,
so masks go to torch unchanged. Rows with nothing to attend to are compared separately:
torch may give NaN there, we must give exactly zero.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
import torch.nn.functional as F

import mhalib
from mhalib import causal_mask, masked_softmax, padding_mask, scaled_dot_product_attention

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}

# (batch dims, L, S, E, Ev): B=1, L != S, Dh=E=1, E != Ev, no batch dims at all (2-D input).
SHAPES = [
    pytest.param((2, 3), 4, 6, 5, 5, id="B2-H3-L4-S6"),
    pytest.param((1, 1), 1, 1, 1, 1, id="all-ones"),
    pytest.param((2, 4), 5, 3, 1, 1, id="Dh1-L>S"),
    pytest.param((1, 2), 3, 7, 4, 6, id="B1-E!=Ev"),
    pytest.param((3,), 5, 5, 8, 2, id="3d-B-L-E"),
    pytest.param((), 4, 2, 3, 3, id="2d-L-E"),
]
MASKS = ["none", "bool", "float", "causal", "causal-mask", "padding"]


def _make_mask(kind: str, batch: tuple[int, ...], L: int, S: int, dtype, gen: torch.Generator):
    """(attn_mask, is_causal, allowed) with ``allowed`` the bool mask broadcast to (*batch, L, S)."""
    full = (*batch, L, S)
    if kind == "none":
        return None, False, torch.ones(full, dtype=torch.bool)
    if kind == "bool":
        mask = torch.rand(full, generator=gen) < 0.6
        mask.view(-1, S)[0] = False  # at least one row with nothing to attend to
        return mask, False, mask
    if kind == "float":
        bias = torch.randn(L, S, generator=gen, dtype=dtype)
        bias[torch.rand(L, S, generator=gen) < 0.3] = float("-inf")
        bias[0] = float("-inf")  # an empty row, broadcast over the batch dims
        return bias, False, (~torch.isneginf(bias)).expand(full)
    if kind == "causal":
        return None, True, causal_mask(L, S).expand(full)
    if kind == "causal-mask":
        return causal_mask(L, S), False, causal_mask(L, S).expand(full)
    if kind == "padding":
        valid_lens = torch.randint(0, S + 2, (batch[0],), generator=gen)
        valid_lens[0] = 0  # an empty sequence
        mask = padding_mask(valid_lens, S)  # (B, 1, 1, S)
        mask = mask.reshape(batch[0], *([1] * (len(batch) - 1)), 1, S)  # broadcastable to (*batch, L, S)
        return mask, False, mask.expand(full)
    raise AssertionError(kind)


def _reference_weights(query, key, attn_mask, is_causal, scale=None):
    """softmax(q k^T * scale + mask), NaN on rows with nothing to attend to."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if is_causal:
        attn_mask = causal_mask(query.shape[-2], key.shape[-2])
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return torch.softmax(scores, dim=-1)


# padding_mask needs a batch dimension: no padding case for 2-D input.
SHAPE_MASKS = [
    pytest.param(*shape.values, kind, id=f"{shape.id}-{kind}")
    for shape in SHAPES
    for kind in MASKS
    if shape.values[0] or kind != "padding"
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch,L,S,E,Ev,mask_kind", SHAPE_MASKS)
def test_sdpa_matches_torch(batch, L, S, E, Ev, mask_kind, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((batch, L, S, E, Ev, mask_kind)).encode()))
    q = torch.randn(*batch, L, E, generator=gen, dtype=dtype)
    k = torch.randn(*batch, S, E, generator=gen, dtype=dtype)
    v = torch.randn(*batch, S, Ev, generator=gen, dtype=dtype)
    attn_mask, is_causal, allowed = _make_mask(mask_kind, batch, L, S, dtype, gen)

    out, weights = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    assert out.shape == (*batch, L, Ev) and weights.shape == (*batch, L, S)
    assert out.dtype == weights.dtype == dtype

    # q/k/v are 2-D for batch=(): torch's F.sdpa wants at least one batch dim.
    expand = (lambda x: x[None]) if not batch else (lambda x: x)
    expected_out = F.scaled_dot_product_attention(
        expand(q), expand(k), expand(v), attn_mask=attn_mask, is_causal=is_causal
    ).reshape(out.shape)
    expected_weights = _reference_weights(q, k, attn_mask, is_causal)

    empty = ~allowed.any(dim=-1)  # (*batch, L): rows with nothing to attend to
    if mask_kind in ("bool", "float", "padding"):
        assert empty.any(), "the test should include an empty row"
    # Ours: exactly zero there (weights and output); torch's values there are not compared.
    assert torch.all(weights[empty] == 0) and torch.all(out[empty] == 0)
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    keep = ~empty
    assert not torch.isnan(expected_out[keep]).any()
    torch.testing.assert_close(out[keep], expected_out[keep], **TOL[dtype])
    torch.testing.assert_close(weights[keep], expected_weights[keep], **TOL[dtype])
    # Masked keys get exactly zero weight.
    assert torch.all(weights.masked_select(~allowed) == 0)


@pytest.mark.parametrize("scale", [0.25, 2.0])
def test_sdpa_custom_scale_matches_torch(scale):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    out, weights = scaled_dot_product_attention(q, k, v, scale=scale)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=scale), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights, _reference_weights(q, k, None, False, scale), rtol=1e-10, atol=1e-10)


def test_sdpa_is_causal_top_left_aligned_when_L_differs_from_S():
    # Row i may attend to keys 0..i whatever S is (torch's convention, not bottom-right).
    q = torch.randn(1, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 5, 4, dtype=torch.float64)
    _, weights = scaled_dot_product_attention(q, k, k, is_causal=True)
    assert torch.equal(weights[0] > 0, causal_mask(3, 5))
    assert torch.equal(causal_mask(3, 5), torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).bool())
    assert torch.equal(causal_mask(2), torch.tensor([[True, False], [True, True]]))


@pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs")
@pytest.mark.parametrize("L,S", [(1, 6), (2, 5), (3, 3), (4, 2), (0, 3), (3, 0)])
def test_causal_mask_lower_right_matches_torch_causal_lower_right(L, S):
    # PyTorch's CausalBias "lower right" variant is the reference for the alignment.
    from torch.nn.attention.bias import CausalBias, CausalVariant

    expected = CausalBias(CausalVariant.LOWER_RIGHT, L, S)._materialize()
    assert torch.equal(causal_mask(L, S, lower_right=True), expected)
    top_left = CausalBias(CausalVariant.UPPER_LEFT, L, S)._materialize()
    assert torch.equal(causal_mask(L, S), top_left)


def test_causal_mask_lower_right_is_what_a_cache_needs():
    # The trap: one new token after 5 cached ones. Top-left lets it see key 0 only.
    assert causal_mask(1, 6).tolist() == [[True, False, False, False, False, False]]
    assert causal_mask(1, 6, lower_right=True).tolist() == [[True] * 6]
    # Query i of the last L sees keys 0..S-L+i.
    m = causal_mask(3, 7, lower_right=True)
    for i in range(3):
        assert m[i].nonzero().flatten().tolist() == list(range(7 - 3 + i + 1))
    # The last L rows of the square mask, which is what "the queries are the last L" means.
    assert torch.equal(m, causal_mask(7)[-3:])
    assert torch.equal(causal_mask(4, lower_right=True), causal_mask(4))
    # More queries than keys: the first L - S rows have nothing to attend to.
    assert causal_mask(4, 2, lower_right=True).any(dim=-1).tolist() == [False, False, True, True]


def test_causal_mask_lower_right_in_sdpa_gives_the_last_rows_of_a_full_pass():
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 6, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    full, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    last, _ = scaled_dot_product_attention(q[:, -2:], k, v, attn_mask=causal_mask(2, 6, lower_right=True))
    torch.testing.assert_close(last, full[:, -2:], rtol=1e-12, atol=1e-12)
    trap, _ = scaled_dot_product_attention(q[:, -2:], k, v, is_causal=True)  # top-left: wrong rows
    assert not torch.allclose(trap, full[:, -2:])


def test_causal_mask_argument_errors():
    with pytest.raises(TypeError, match="lower_right must be a bool, got int"):
        causal_mask(2, 3, lower_right=1)
    with pytest.raises(TypeError):
        causal_mask(2, 3, None, True)  # lower_right is keyword-only
    with pytest.raises(ValueError, match="S must be a non-negative int, got -1"):
        causal_mask(2, -1, lower_right=True)


def test_padding_mask_shapes_and_values():
    lens = torch.tensor([0, 2, 5])
    m = padding_mask(lens, 4)
    assert m.shape == (3, 1, 1, 4) and m.dtype == torch.bool
    assert torch.equal(m[:, 0, 0], torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool())
    per_query = padding_mask(torch.tensor([[1, 3], [0, 4]]), 3)
    assert per_query.shape == (2, 1, 2, 3)
    assert torch.equal(per_query[:, 0], torch.tensor([[[1, 0, 0], [1, 1, 1]], [[0, 0, 0], [1, 1, 1]]]).bool())


# --- masked_softmax -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_masked_softmax_per_sequence_lengths(dtype):
    scores = torch.randn(4, 3, 5, dtype=dtype)
    valid_lens = torch.tensor([0, 2, 5, 9])  # empty, partial, exactly S, more than S
    weights = masked_softmax(scores, valid_lens)
    assert weights.shape == scores.shape
    assert torch.all(weights[0] == 0)  # valid length 0 -> a row of zeros, not uniform, not NaN
    assert torch.all(weights[1, :, 2:] == 0)
    torch.testing.assert_close(weights[1, :, :2], torch.softmax(scores[1, :, :2], dim=-1), **TOL[dtype])
    torch.testing.assert_close(weights[2:], torch.softmax(scores[2:], dim=-1), **TOL[dtype])  # >= S: plain softmax


def test_masked_softmax_per_query_lengths():
    scores = torch.randn(2, 3, 4, dtype=torch.float64)
    valid_lens = torch.tensor([[1, 0, 4], [2, 3, 7]])
    weights = masked_softmax(scores, valid_lens)
    for b in range(2):
        for i in range(3):
            n = min(int(valid_lens[b, i]), 4)
            assert torch.all(weights[b, i, n:] == 0)
            if n:
                torch.testing.assert_close(weights[b, i, :n], torch.softmax(scores[b, i, :n], dim=-1), rtol=1e-12, atol=1e-12)
    assert torch.all(weights[0, 1] == 0)


def test_masked_softmax_without_lengths_is_softmax():
    scores = torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, dim=-1), rtol=0, atol=0)


@pytest.mark.parametrize("valid_lens", [torch.tensor([0, 3, 6]), torch.tensor([[1, 0], [2, 6], [5, 5]])], ids=["(B,)", "(B,L)"])
def test_masked_softmax_equals_sdpa_with_padding_mask(valid_lens):
    # masked_softmax(q k^T / sqrt(E)) @ v is attention with padding_mask(valid_lens).
    q = torch.randn(3, 2, 4, dtype=torch.float64)
    k = torch.randn(3, 6, 4, dtype=torch.float64)
    v = torch.randn(3, 6, 5, dtype=torch.float64)
    weights = masked_softmax(q @ k.transpose(1, 2) / 2.0, valid_lens)  # sqrt(E) = 2
    mask = padding_mask(valid_lens, 6)[:, 0]  # (B, 1, 1|L, S) -> (B, 1|L, S)
    out, sdpa_weights = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(weights, sdpa_weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights @ v, out, rtol=1e-12, atol=1e-12)


def test_public_api_is_exported():
    for name in mhalib.__all__:
        assert callable(getattr(mhalib, name))
