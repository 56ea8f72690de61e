"""Every bad input raises ValueError or TypeError naming the argument, what was expected and what arrived."""

from __future__ import annotations

import re

import pytest
import torch

from mhalib import (
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    split_heads,
    transpose_output,
)

x = torch.randn(2, 3, 8)  # (B, L, D)
mha = MultiHeadAttention(8, 2, kdim=5)
k5 = torch.randn(2, 3, 5)  # key of width kdim
lit = re.escape

SDPA_CASES = [
    pytest.param(dict(query=x, key=torch.randn(2, 3, 5), value=x), ValueError,
                 lit("query and key must have the same feature size E, got query (..., L, 8) and key (..., S, 5)"), id="E-mismatch"),
    pytest.param(dict(query=x, key=x, value=torch.randn(2, 4, 8)), ValueError,
                 lit("key and value must have the same length S, got key (..., 3, E) and value (..., 4, Ev)"), id="S-mismatch"),
    pytest.param(dict(query=x, key=x, value=x, attn_mask=torch.ones(3, 4, dtype=torch.bool)), ValueError,
                 lit("attn_mask of shape (3, 4) does not broadcast to the scores' shape (2, 3, 3)"), id="mask-shape"),
    pytest.param(dict(query=x, key=x, value=x, attn_mask=torch.ones(3, 3, dtype=torch.int64)), TypeError,
                 r"attn_mask must be bool .* or floating .*got dtype torch\.int64", id="int-mask"),
    pytest.param(dict(query=x.int(), key=x, value=x), TypeError,
                 r"query must be a floating-point tensor, got dtype torch\.int32", id="int-query"),
    pytest.param(dict(query=x, key=x, value=x.long()), TypeError,
                 r"value must be a floating-point tensor, got dtype torch\.int64", id="int-value"),
    pytest.param(dict(query=x.tolist(), key=x, value=x), TypeError, r"query must be a torch\.Tensor, got list", id="list-query"),
    pytest.param(dict(query=x, key=x.numpy(), value=x), TypeError, r"key must be a torch\.Tensor, got ndarray", id="numpy-key"),
    pytest.param(dict(query=x, key=x, value=x.double()), TypeError, r"share a dtype, got torch\.float32, torch\.float32, torch\.float64", id="dtypes"),
    pytest.param(dict(query=x, key=x, value=x, dropout_p=1.0), ValueError, lit("dropout_p must be in [0, 1), got 1.0"), id="dropout"),
    pytest.param(dict(query=x, key=x, value=x, attn_mask=causal_mask(3), is_causal=True), ValueError,
                 "either attn_mask or is_causal=True, not both", id="mask-and-causal"),
    pytest.param(dict(query=torch.randn(8), key=x, value=x), ValueError,
                 lit("query must have at least 2 dimensions, got shape (8,)"), id="1d-query"),
]


@pytest.mark.parametrize("kwargs,error,message", SDPA_CASES)
def test_sdpa_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        scaled_dot_product_attention(**kwargs)


MODULE_CASES = [
    pytest.param(dict(key=torch.randn(2, 3, 8)), ValueError, lit("key must have kdim=5 features (B, *, 5), got shape (2, 3, 8)"), id="kdim"),
    pytest.param(dict(query=torch.randn(2, 3, 6)), ValueError, lit("query must have embed_dim=8 features (B, *, 8), got shape (2, 3, 6)"), id="embed_dim"),
    pytest.param(dict(value=torch.randn(2, 4, 8)), ValueError, lit("key and value must have the same length S, got 3 and 4"), id="S-mismatch"),
    pytest.param(dict(value=torch.randn(3, 3, 8)), ValueError, lit("must share the batch size B, got 2, 2, 3"), id="B-mismatch"),
    pytest.param(dict(query=torch.randn(3, 8)), ValueError, lit("query must have 3 dimensions, got shape (3, 8)"), id="2d-query"),
    pytest.param(dict(query=x.half().int()), TypeError, r"query must be a floating-point tensor, got dtype torch\.int32", id="int-query"),
    pytest.param(dict(value=[[1.0]]), TypeError, r"value must be a torch\.Tensor, got list", id="list-value"),
    pytest.param(dict(attn_mask=torch.ones(3, 4, dtype=torch.bool)), ValueError,
                 r"attn_mask .*\(L, S\) = \(3, 3\).*got \(3, 4\)", id="mask-LS"),
    pytest.param(dict(attn_mask=torch.ones(3, 3, 3, dtype=torch.bool)), ValueError,
                 r"attn_mask .*\(B, L, S\) = \(2, 3, 3\).*got \(3, 3, 3\)", id="mask-B"),
    pytest.param(dict(attn_mask=torch.ones(4, 3, 4, dtype=torch.bool)), ValueError,
                 r"attn_mask .*\(B\*H, L, S\) = \(4, 3, 3\).*got \(4, 3, 4\)", id="mask-BH-wrong-S"),
    pytest.param(dict(attn_mask=torch.ones(3, 3, dtype=torch.int32)), TypeError, r"attn_mask must be bool .*got dtype torch\.int32", id="int-mask"),
    pytest.param(dict(valid_lens=torch.tensor([1.0, 2.0])), TypeError, r"valid_lens must be an integer tensor .*got dtype torch\.float32", id="float-lens"),
    pytest.param(dict(valid_lens=torch.tensor([True, False])), TypeError, r"valid_lens must be an integer tensor .*got dtype torch\.bool", id="bool-lens"),
    pytest.param(dict(valid_lens=torch.tensor([1, 2, 3])), ValueError, r"valid_lens must have shape \(B,\) = \(2,\) or \(B, L\) = \(2, 3\), got \(3,\)", id="lens-shape"),
    pytest.param(dict(valid_lens=torch.ones(2, 4, dtype=torch.long)), ValueError, r"valid_lens must have shape .*got \(2, 4\)", id="lens-L"),
    pytest.param(dict(valid_lens=[1, 2]), TypeError, r"valid_lens must be a torch\.Tensor, got list", id="list-lens"),
]


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("kwargs,error,message", MODULE_CASES)
def test_module_errors(kwargs, error, message, need_weights):
    args = dict(query=x, key=k5, value=x)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        mha(**args, need_weights=need_weights)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(embed_dim=10, num_heads=4), lit("embed_dim (10) must be divisible by num_heads (4)")),
        (dict(embed_dim=8, num_heads=0), lit("num_heads must be a positive int, got 0")),
        (dict(embed_dim=8, num_heads=2.0), lit("num_heads must be a positive int, got 2.0")),
        (dict(embed_dim=0, num_heads=1), lit("embed_dim must be a positive int, got 0")),
        (dict(embed_dim=8, num_heads=2, dropout=1.5), lit("dropout must be in [0, 1), got 1.5")),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**kwargs)


def test_from_torch_errors():
    with pytest.raises(TypeError, match="module must be a torch.nn.MultiheadAttention, got Linear"):
        MultiHeadAttention.from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn are not supported"):
        MultiHeadAttention.from_torch(torch.nn.MultiheadAttention(4, 2, add_bias_kv=True))


def test_function_errors():
    scores = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match=r"valid_lens must be an integer tensor .*got dtype torch\.float32"):
        masked_softmax(scores, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"valid_lens must have shape \(B,\) = \(2,\) or \(B, L\) = \(2, 3\), got \(2, 4\)"):
        masked_softmax(scores, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=lit("scores must have 3 dimensions, got shape (3, 4)")):
        masked_softmax(torch.randn(3, 4))
    with pytest.raises(TypeError, match=r"scores must be a floating-point tensor, got dtype torch\.int64"):
        masked_softmax(scores.long())
    with pytest.raises(TypeError, match=r"valid_lens must be an integer tensor .*got dtype torch\.float32"):
        padding_mask(torch.tensor([1.5]), 3)
    with pytest.raises(ValueError, match=lit("valid_lens must have shape (B,) or (B, L), got (1, 1, 1)")):
        padding_mask(torch.ones(1, 1, 1, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=lit("L must be a non-negative int, got -1")):
        causal_mask(-1)
    with pytest.raises(ValueError, match=lit("S must be a non-negative int, got 2.5")):
        causal_mask(2, 2.5)
    with pytest.raises(ValueError, match=lit("the feature size D of x (8) must be divisible by num_heads (3)")):
        split_heads(x, 3)
    with pytest.raises(ValueError, match=lit("x must have 4 dimensions, got shape (2, 3, 8)")):
        merge_heads(x)
    with pytest.raises(ValueError, match=lit("the first dimension B*H of x (3) must be divisible by num_heads (2)")):
        transpose_output(torch.randn(3, 2, 2), 2)
