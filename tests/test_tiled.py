"""tiled_attention against PyTorch's fused scaled_dot_product_attention.

Shapes: B batch, H heads, L query length, S key length, E query/key features, Ev value
features. Timings and peak memory are measured in benchmarks/bench_tiled.py, not here.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mhalib
from mhalib import causal_block_kind, tiled_attention

SETTINGS = settings(max_examples=40, deadline=None, database=None)  # no .hypothesis dir in the tree
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def qkv(*batch: int, L: int, S: int, E: int = 4, Ev: int = 3, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, L, E, generator=gen, dtype=dtype)
    k = torch.randn(*batch, S, E, generator=gen, dtype=dtype)
    v = torch.randn(*batch, S, Ev, generator=gen, dtype=dtype)
    return q, k, v


# --- equal to F.scaled_dot_product_attention --------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(
    "L, S, block_q, block_k",
    [
        (16, 16, 4, 4),  # blocks divide T
        (17, 17, 5, 3),  # blocks that do not divide T, block_q != block_k
        (7, 23, 3, 5),  # L < S
        (23, 7, 5, 3),  # L > S: causal rows 7..22 see every key
        (9, 9, 64, 64),  # one block larger than everything
        (12, 10, 1, 1),  # one query and one key per block
        (1, 1, 1, 1),
        (5, 13, 2, 13),  # one key block, several query blocks
    ],
)
def test_equals_fused_sdpa(dtype, is_causal, L, S, block_q, block_k):
    q, k, v = qkv(2, 3, L=L, S=S, E=8, Ev=5, dtype=dtype)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    got = tiled_attention(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    assert got.shape == expected.shape and got.dtype == dtype
    torch.testing.assert_close(got, expected, **TOL[dtype])


def test_float64_difference_is_at_rounding_level():
    # The bar: 1e-10 in float64. The measured difference is far below it.
    q, k, v = qkv(2, 4, L=300, S=300, E=16, Ev=16)
    for causal in (False, True):
        diff = (tiled_attention(q, k, v, is_causal=causal, block_q=64, block_k=48)
                - F.scaled_dot_product_attention(q, k, v, is_causal=causal)).abs().max().item()
        assert diff < 1e-13, diff


def test_float32_default_blocks_long_sequence():
    q, k, v = qkv(1, 2, L=1500, S=1300, E=16, Ev=8, dtype=torch.float32, seed=3)
    for causal in (False, True):
        torch.testing.assert_close(
            tiled_attention(q, k, v, is_causal=causal),  # block_q=1024, block_k=512: 2 x 3 tiles
            F.scaled_dot_product_attention(q, k, v, is_causal=causal), **TOL[torch.float32]
        )


@pytest.mark.parametrize("batch", [(), (2,), (2, 3), (2, 1, 3, 2)], ids=["none", "B", "B,H", "rank4"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_batch_dims_of_any_rank(batch, is_causal):
    q, k, v = qkv(*batch, L=6, S=9, dtype=torch.float64, seed=1)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    got = tiled_attention(q, k, v, is_causal=is_causal, block_q=4, block_k=4)
    assert got.shape == (*batch, 6, 3)
    torch.testing.assert_close(got, expected, **TOL[torch.float64])


def test_batch_dims_broadcast():
    # One key/value sequence shared by every head, as matmul broadcasts it.
    q, _, _ = qkv(2, 3, L=5, S=7)
    _, k, v = qkv(2, 1, L=5, S=7, seed=4)
    got = tiled_attention(q, k, v, block_q=2, block_k=3)
    assert got.shape == (2, 3, 5, 3)
    expected = F.scaled_dot_product_attention(q, k.expand(2, 3, 7, 4), v.expand(2, 3, 7, 3))
    torch.testing.assert_close(got, expected, **TOL[torch.float64])


def test_scale_argument():
    q, k, v = qkv(2, L=5, S=6)
    for scale in (0.1, 1.0, 3.0):
        torch.testing.assert_close(
            tiled_attention(q, k, v, scale=scale, block_q=2, block_k=4),
            F.scaled_dot_product_attention(q, k, v, scale=scale), **TOL[torch.float64]
        )


def test_large_scores_do_not_overflow():
    # Scores around +-1000 in float32: exp would overflow without the running maximum.
    q, k, v = qkv(2, L=8, S=8, dtype=torch.float32)
    got = tiled_attention(q * 200, k * 200, v, block_q=3, block_k=3)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q * 200, k * 200, v), **TOL[torch.float32])


def test_no_fully_masked_rows_with_top_left_causal():
    # Top-left alignment: query i sees keys 0..min(i, S-1), so every row sees key 0, for
    # L < S and L > S alike, and F.sdpa and the tiled loop return a real average (no zeros,
    # no NaN). The diagonal tiles contain rows that see nothing *in that tile*; the running
    # maximum from earlier tiles keeps them finite.
    for L, S in ((3, 10), (10, 3)):
        q, k, v = qkv(L=L, S=S)
        got = tiled_attention(q, k, v, is_causal=True, block_q=2, block_k=2)
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(got, expected, **TOL[torch.float64])
        torch.testing.assert_close(got[0], v[0])  # query 0 sees key 0 only
        assert torch.isfinite(got).all()


def test_no_keys_gives_zeros_like_fused_sdpa():
    # S = 0: every row is empty. PyTorch 2.13's fused kernel returns zeros; so do we.
    q, k, v = qkv(2, L=4, S=0)
    expected = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(expected, torch.zeros(2, 4, 3, dtype=torch.float64))
    for causal in (False, True):
        assert torch.equal(tiled_attention(q, k, v, is_causal=causal, block_q=3, block_k=2), expected)


def test_no_queries():
    q, k, v = qkv(2, L=0, S=5)
    assert tiled_attention(q, k, v).shape == (2, 0, 3)


def test_does_not_change_its_inputs():
    q, k, v = qkv(2, L=7, S=7)
    before = [t.clone() for t in (q, k, v)]
    tiled_attention(q, k, v, is_causal=True, block_q=3, block_k=2)
    for t, b in zip((q, k, v), before):
        assert torch.equal(t, b)


def test_non_contiguous_inputs():
    q, k, v = qkv(3, 2, L=6, S=6)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (2, 3, ...) views, not contiguous
    torch.testing.assert_close(
        tiled_attention(q, k, v, is_causal=True, block_q=4, block_k=4),
        F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL[torch.float64]
    )


def test_gradients_match_fused_sdpa():
    # Backward goes through autograd's record of the out-of-place loop (see the docstring).
    q, k, v = (t.requires_grad_() for t in qkv(2, L=7, S=9))
    tiled_attention(q, k, v, is_causal=True, block_q=3, block_k=4).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    for got, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad, **TOL[torch.float64])


def test_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(L=4, S=5, E=3, Ev=2, seed=2))
    assert torch.autograd.gradcheck(
        lambda a, b, c: tiled_attention(a, b, c, is_causal=True, block_q=3, block_k=2), (q, k, v)
    )


def test_no_grad_path_equals_grad_path():
    q, k, v = qkv(2, L=9, S=9)
    with torch.no_grad():
        in_place = tiled_attention(q, k, v, is_causal=True, block_q=4, block_k=3)
    recorded = tiled_attention(q.requires_grad_(), k, v, is_causal=True, block_q=4, block_k=3)
    torch.testing.assert_close(in_place, recorded.detach(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("L, S", [(1, 1), (1, 9), (9, 1), (1, 0)])
def test_one_query_or_one_key(L, S, is_causal):
    # L = 1: top-left causal, the only query sees key 0 alone; S = 1: every query sees the one key.
    q, k, v = qkv(2, 3, L=L, S=S, E=4, Ev=3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    for bq, bk in ((1, 1), (4, 4), (1024, 512)):
        got = tiled_attention(q, k, v, is_causal=is_causal, block_q=bq, block_k=bk)
        torch.testing.assert_close(got, expected, **TOL[torch.float64])
    if is_causal and S:
        torch.testing.assert_close(got[..., 0, :], v[..., 0, :], **TOL[torch.float64])


def test_causal_alignment_is_top_left_as_fused_sdpa_not_lower_right():
    # F.scaled_dot_product_attention(is_causal=True) aligns the diagonal top-left for L != S
    # (query i sees keys 0..i); lower-right (query i sees keys 0..i + S - L, what decoding with a
    # cache needs) is a different mask, torch.nn.attention.bias.causal_lower_right. We match the
    # former, for L > S and L < S.
    for L, S in ((9, 4), (4, 9)):
        q, k, v = qkv(2, L=L, S=S)
        top_left = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(L, S, dtype=torch.bool).tril())
        torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, is_causal=True), top_left)
        lower_right = torch.ones(L, S, dtype=torch.bool).tril(S - L)
        got = tiled_attention(q, k, v, is_causal=True, block_q=3, block_k=2)
        torch.testing.assert_close(got, top_left, **TOL[torch.float64])
        rows = lower_right.any(dim=-1)  # lower-right leaves the first L - S rows empty when L > S
        assert not torch.allclose(got[:, rows], F.scaled_dot_product_attention(
            q[:, rows], k, v, attn_mask=lower_right[rows]))


def test_value_with_more_batch_dims_than_query_and_key():
    # The scores have the batch dims of query and key only; the output those of all three.
    q, k = torch.randn(5, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    v = torch.randn(2, 7, 3, dtype=torch.float64)
    for causal in (False, True):
        with torch.no_grad():
            got = tiled_attention(q, k, v, is_causal=causal, block_q=2, block_k=3)
        assert got.shape == (2, 5, 3)
        torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                   **TOL[torch.float64])


class _MatmulLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (output shape, output storage) of every matrix product run inside it."""

    def __init__(self):
        super().__init__()
        self.products = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ == "bmm":
            result = (kwargs or {}).get("out", out)
            self.products.append((tuple(result.shape[-2:]), result.untyped_storage().data_ptr()))
        return out


def test_diagonal_tiles_leave_out_the_rows_before_their_first_key():
    # L = S = 12, blocks 8 x 4, causal. Query block 0..7 visits keys 0..3 (all 8 rows), keys
    # 4..7 (rows 4..7 only: queries 0..3 come before key 4); query block 8..11 visits keys 0..3,
    # 4..7 and 8..11, all 4 rows. The score products are (rows, keys); the products with the
    # values are (rows, Ev).
    q, k, v = qkv(2, L=12, S=12, Ev=3)
    with torch.no_grad(), _MatmulLog() as log:
        got = tiled_attention(q, k, v, is_causal=True, block_q=8, block_k=4)
    scores = [shape for shape, _ in log.products if shape[-1] == 4]
    assert scores == [(8, 4), (4, 4), (4, 4), (4, 4), (4, 4)]
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL[torch.float64])


def test_every_tile_of_scores_is_written_into_one_buffer():
    # In place (no grad), the loop allocates the tile once: every score product writes into
    # the same storage, whatever L and S.
    q, k, v = qkv(2, 3, L=20, S=30, Ev=3)
    for causal in (False, True):
        with torch.no_grad(), _MatmulLog() as log:
            tiled_attention(q, k, v, is_causal=causal, block_q=6, block_k=7)
        buffers = {ptr for (_, keys), ptr in log.products if keys != 3}  # score products
        assert len(buffers) == 1, buffers


# --- the causal block test ------------------------------------------------------------------


def test_causal_block_kind_matches_the_mask():
    mask = mhalib.causal_mask(11, 13)  # (L, S), top-left
    for bq, bk in ((3, 4), (4, 3), (5, 5), (1, 2)):
        for i0 in range(0, 11, bq):
            for j0 in range(0, 13, bk):
                tile = mask[i0:i0 + bq, j0:j0 + bk]
                kind = causal_block_kind(i0, min(i0 + bq, 11), j0, min(j0 + bk, 13))
                expected = "skip" if not tile.any() else "full" if tile.all() else "diagonal"
                assert kind == expected, (i0, j0, bq, bk)


def test_skips_blocks_above_the_diagonal():
    # Keys of a skipped block can be anything, even NaN: they are never read.
    q, k, v = qkv(L=8, S=8)
    k2, v2 = k.clone(), v.clone()
    k2[4:], v2[4:] = float("nan"), float("nan")  # keys 4..7: above the diagonal for queries 0..3
    got = tiled_attention(q[:4], k2, v2, is_causal=True, block_q=4, block_k=4)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q[:4], k[:4], v[:4], is_causal=True))


# --- properties -----------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=12)
blocks = st.integers(min_value=1, max_value=14)


@SETTINGS
@given(L=sizes, S=sizes, E=st.integers(1, 6), Ev=st.integers(1, 6), bq=blocks, bk=blocks,
       causal=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_property_equals_fused_sdpa_for_every_shape_and_block(L, S, E, Ev, bq, bk, causal, seed):
    q, k, v = qkv(2, L=L, S=S, E=E, Ev=Ev, seed=seed)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    got = tiled_attention(q, k, v, is_causal=causal, block_q=bq, block_k=bk)
    torch.testing.assert_close(got, expected, **TOL[torch.float64])


@SETTINGS
@given(L=sizes, bq=blocks, bk=blocks, seed=st.integers(0, 2**31 - 1))
def test_property_result_does_not_depend_on_the_blocks(L, bq, bk, seed):
    q, k, v = qkv(2, L=L, S=L, seed=seed)
    one_tile = tiled_attention(q, k, v, is_causal=True, block_q=L, block_k=L)
    torch.testing.assert_close(tiled_attention(q, k, v, is_causal=True, block_q=bq, block_k=bk), one_tile,
                               **TOL[torch.float64])


@SETTINGS
@given(L=sizes, split=st.integers(1, 11), seed=st.integers(0, 2**31 - 1))
def test_property_causal_outputs_ignore_the_future(L, split, seed):
    split = min(split, L)
    q, k, v = qkv(L=L, S=L, seed=seed)
    k2, v2 = k.clone(), v.clone()
    k2[split:] += 5.0
    v2[split:] -= 3.0
    a = tiled_attention(q, k, v, is_causal=True, block_q=3, block_k=2)
    b = tiled_attention(q, k2, v2, is_causal=True, block_q=3, block_k=2)
    assert torch.equal(a[:split], b[:split])


@SETTINGS
@given(L=sizes, S=sizes, seed=st.integers(0, 2**31 - 1))
def test_property_rows_are_convex_combinations_of_values(L, S, seed):
    q, k, v = qkv(L=L, S=S, Ev=1, seed=seed)
    out = tiled_attention(q, k, v, block_q=2, block_k=3)
    assert torch.all(out <= v.max() + 1e-12) and torch.all(out >= v.min() - 1e-12)


# --- errors ---------------------------------------------------------------------------------

x = torch.randn(2, 5, 4)
lit = re.escape


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(block_q=0), ValueError, lit("block_q must be a positive int (rows per block), got 0")),
        (dict(block_k=-3), ValueError, lit("block_k must be a positive int (rows per block), got -3")),
        (dict(block_q=2.0), ValueError, lit("block_q must be a positive int (rows per block), got 2.0")),
        (dict(block_k=True), ValueError, lit("block_k must be a positive int (rows per block), got True")),
        (dict(key=torch.randn(2, 5, 3)), ValueError,
         lit("query and key must have the same feature size E, got query (..., L, 4) and key (..., S, 3)")),
        (dict(value=torch.randn(2, 6, 4)), ValueError,
         lit("key and value must have the same length S, got key (..., 5, E) and value (..., 6, Ev)")),
        (dict(query=torch.randn(5)), ValueError, lit("query must have at least 2 dimensions, got shape (5,)")),
        (dict(key=torch.randn(3, 5, 4)), ValueError,
         lit("the batch dimensions of query (2,), key (3,) and value (2,) do not broadcast")),
        (dict(value=x.long()), TypeError, lit("value must be a floating-point tensor, got dtype torch.int64")),
        (dict(query=x.double()), TypeError, lit("query, key and value must share a dtype")),
        (dict(query=x.tolist()), TypeError, lit("query must be a torch.Tensor, got list")),
        (dict(is_causal=1), TypeError, lit("is_causal must be a bool, got int")),
        (dict(scale="0.5"), TypeError, lit("scale must be a float or None, got str")),
    ],
)
def test_errors_name_the_argument(kwargs, error, message):
    args = dict(query=x, key=x, value=x) | kwargs
    with pytest.raises(error, match=message):
        tiled_attention(**args)
