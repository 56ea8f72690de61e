"""torch.autograd.gradcheck in float64 on the functions and the module.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from mhalib import (
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
    transpose_output,
    transpose_qkv,
)


def _leaf(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_()


def _with_empty_row() -> torch.Tensor:
    allowed = torch.tensor([[True, False, True, False], [False, False, False, False], [True, True, True, True]])
    return allowed  # (L=3, S=4): row 1 may attend to nothing


MASKS = {
    "none": (None, False),
    "causal": (None, True),
    "bool-with-empty-row": (_with_empty_row(), False),
    "float-with-empty-row": (torch.zeros(3, 4, dtype=torch.float64).masked_fill(~_with_empty_row(), float("-inf")) + 0.5, False),
    "causal-mask-L<S": (causal_mask(3, 4), False),
}


@pytest.mark.parametrize("mask_name", MASKS)
def test_gradcheck_sdpa(mask_name):
    attn_mask, is_causal = MASKS[mask_name]
    q, k, v = _leaf(2, 2, 3, 5, seed=1), _leaf(2, 2, 4, 5, seed=2), _leaf(2, 2, 4, 3, seed=3)

    def f(q, k, v):
        return scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)

    assert gradcheck(f, (q, k, v))
    out, weights = f(q, k, v)
    (out.sum() + (weights**2).sum()).backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    if mask_name.endswith("empty-row"):
        assert torch.all(q.grad[:, :, 1] == 0)  # the empty row's output is a constant 0


@pytest.mark.parametrize("valid_lens", [torch.tensor([0, 2, 6]), torch.tensor([[1, 0, 3, 9]] * 3)], ids=["(B,)", "(B,L)"])
def test_gradcheck_masked_softmax(valid_lens):
    scores = _leaf(3, 4, 5)
    assert gradcheck(lambda s: masked_softmax(s, valid_lens), (scores,))
    masked_softmax(scores, valid_lens).sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_gradcheck_head_layouts():
    x = _leaf(2, 3, 6)
    assert gradcheck(lambda x: merge_heads(split_heads(x, 3) * 2), (x,))
    assert gradcheck(lambda x: transpose_output(transpose_qkv(x, 2) ** 2, 2), (x,))


MODULE_MASKS = {
    "padding+causal": dict(valid_lens=torch.tensor([0, 4]), is_causal=True),  # sequence 0 is all padding
    "float-with-empty-row": dict(attn_mask=torch.zeros(3, 5, dtype=torch.float64).index_fill(0, torch.tensor([1]), float("-inf"))),
}


@pytest.mark.parametrize("mask_name", MODULE_MASKS)
@pytest.mark.parametrize("need_weights", [True, False], ids=["explicit", "fused"])
def test_gradcheck_module(need_weights, mask_name):
    torch.manual_seed(0)
    mha = MultiHeadAttention(4, 2, kdim=3).double()
    query, key, value = _leaf(2, 3, 4, seed=1), _leaf(2, 5, 3, seed=2), _leaf(2, 5, 4, seed=3)

    def f(query, key, value):
        return mha(query, key, value, need_weights=need_weights, **MODULE_MASKS[mask_name])[0]

    assert gradcheck(f, (query, key, value))
    f(query, key, value).sum().backward()
    for p in [query, key, value, *mha.parameters()]:
        assert torch.isfinite(p.grad).all()
