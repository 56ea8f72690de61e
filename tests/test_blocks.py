"""mhalib.TransformerBlock against torch.nn.TransformerEncoderLayer(batch_first=True), weights copied.

torch's boolean masks mean the opposite of ours: ``src_key_padding_mask`` is True at
padding and a boolean ``src_mask`` is True where a query may NOT attend. Its
``is_causal`` is only a hint that comes with a causal ``src_mask``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhalib import MultiHeadAttention, TransformerBlock, causal_mask

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
MASKS = ["none", "padding", "causal", "padding+causal", "bool", "float"]


def _torch_layer(D, H, F, activation, norm_first, dtype, bias=True, seed=0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        D, H, F, dropout=0.1, activation=activation, norm_first=norm_first, batch_first=True, bias=bias, dtype=dtype
    )
    # LayerNorms start at (1, 0): give them random values so a swapped norm1/norm2 would show.
    with torch.no_grad():
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            if norm.bias is not None:
                norm.bias.uniform_(-0.5, 0.5)
    return layer.eval()


def _masks(kind, B, L, dtype, gen):
    """(our kwargs, torch kwargs)."""
    if kind == "none":
        return {}, {}
    ours, theirs = {}, {}
    if "padding" in kind:
        valid_lens = torch.randint(1, L + 1, (B,), generator=gen)
        valid_lens[0] = L
        valid_lens[-1] = 2
        ours["valid_lens"] = valid_lens
        theirs["src_key_padding_mask"] = torch.arange(L) >= valid_lens[:, None]  # (B, L), True = padding
    if "causal" in kind:
        ours["is_causal"] = True
        theirs["src_mask"] = ~causal_mask(L)  # True = may NOT attend
        theirs["is_causal"] = True
    if kind == "bool":
        allowed = torch.rand(L, L, generator=gen) < 0.6
        allowed |= torch.eye(L, dtype=torch.bool)  # every query may attend to something
        ours["attn_mask"], theirs["src_mask"] = allowed, ~allowed
    if kind == "float":
        bias = torch.randn(L, L, generator=gen, dtype=dtype)
        ours["attn_mask"], theirs["src_mask"] = bias, bias
    return ours, theirs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_same_outputs_as_torch_encoder_layer(norm_first, activation, mask, dtype, grad):
    # no_grad lets torch take its fused "fast path" in eval mode; with grad it runs the Python path.
    D, H, F, B, L = 8, 2, 16, 3, 5
    layer = _torch_layer(D, H, F, activation, norm_first, dtype)
    block = TransformerBlock.from_torch(layer)
    assert not block.training
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, D, generator=gen, dtype=dtype)
    ours_kw, theirs_kw = _masks(mask, B, L, dtype, gen)
    # torch's fast path returns NaN for a float src_mask (pytorch/pytorch#118628, open):
    # compare float masks with its Python path.
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fast_path and mask != "float")
    try:
        with torch.set_grad_enabled(grad):
            theirs = layer(x, **theirs_kw)
            ours = block(x, **ours_kw)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    assert ours.shape == (B, L, D) and ours.dtype == dtype
    if "padding" in mask and not grad:
        # torch's fast path returns zeros at padded positions; compare the real tokens there.
        keep = ~theirs_kw["src_key_padding_mask"]
        torch.testing.assert_close(ours[keep], theirs[keep], **TOL[dtype])
    else:
        torch.testing.assert_close(ours, theirs, **TOL[dtype])


@pytest.mark.parametrize("norm_first", [False, True])
def test_no_bias_and_other_eps(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        12, 3, 20, activation="gelu", layer_norm_eps=1e-12, norm_first=norm_first, batch_first=True, bias=False,
        dtype=torch.float64,
    ).eval()
    block = TransformerBlock.from_torch(layer)
    assert block.norm1.eps == 1e-12 and block.ffn.linear1.bias is None and block.norm1.bias is None
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    torch.testing.assert_close(block(x), layer(x), **TOL[torch.float64])


def test_activation_given_as_module():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU(), batch_first=True, dtype=torch.float64).eval()
    block = TransformerBlock.from_torch(layer)
    assert block.activation == "gelu"
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x), layer(x), **TOL[torch.float64])
    tanh = nn.TransformerEncoderLayer(8, 2, 16, activation=nn.GELU(approximate="tanh"), batch_first=True)
    with pytest.raises(ValueError, match="layer.activation must be relu or gelu"):
        TransformerBlock.from_torch(tanh)


@pytest.mark.parametrize("norm_first", [False, True])
def test_to_torch_round_trip(norm_first):
    torch.manual_seed(0)
    block = TransformerBlock(8, 4, 32, activation="gelu", norm_first=norm_first).double().eval()
    with torch.no_grad():
        block.norm2.weight.uniform_(0.5, 1.5)
    theirs = block.to_torch()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    valid_lens = torch.tensor([6, 3])
    padding = torch.arange(6) >= valid_lens[:, None]  # (B, L), True = padding
    # Gradients on: torch runs its Python path, which computes padded positions too.
    theirs_out = theirs(x, src_mask=~causal_mask(6), src_key_padding_mask=padding, is_causal=True)
    torch.testing.assert_close(block(x, valid_lens=valid_lens, is_causal=True), theirs_out, **TOL[torch.float64])
    again = TransformerBlock.from_torch(theirs)
    for (name, a), (_, b) in zip(block.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_defaults_match_torch_except_dropout():
    block = TransformerBlock(16, 4, 64)
    layer = nn.TransformerEncoderLayer(16, 4, 64, batch_first=True)
    assert block.norm_first is layer.norm_first is False
    assert block.norm1.eps == layer.norm1.eps == 1e-5
    assert block.activation == "relu" and layer.activation is torch.nn.functional.relu
    assert block.dropout1.p == 0.0 and layer.dropout1.p == 0.1
    assert block.ffn.linear1.bias is not None


def test_submodule_names_are_stable():
    # Chapters 7 and 8 map checkpoints onto these names; renaming them breaks them.
    block = TransformerBlock(8, 2, 12)
    assert isinstance(block.attention, MultiHeadAttention)
    names = {name for name, _ in block.named_parameters()}
    assert names == {
        "attention.q_proj.weight", "attention.q_proj.bias", "attention.k_proj.weight", "attention.k_proj.bias",
        "attention.v_proj.weight", "attention.v_proj.bias", "attention.out_proj.weight", "attention.out_proj.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
        "ffn.linear1.weight", "ffn.linear1.bias", "ffn.linear2.weight", "ffn.linear2.bias",
    }
    assert block.ffn.linear1.weight.shape == (12, 8) and block.ffn.linear2.weight.shape == (8, 12)


def test_pre_and_post_ln_differ_and_pre_ln_keeps_the_residual():
    torch.manual_seed(0)
    post = TransformerBlock(8, 2, 16, norm_first=False).double()
    pre = TransformerBlock(8, 2, 16, norm_first=True).double()
    pre.load_state_dict(post.state_dict())
    x = torch.randn(2, 5, 8, dtype=torch.float64) * 10
    out_post, out_pre = post(x), pre(x)
    assert not torch.allclose(out_post, out_pre)
    # post-LN ends with a LayerNorm (mean 0, std 1 per token, norm2 still at (1, 0)); pre-LN keeps x's scale.
    torch.testing.assert_close(out_post.mean(-1), torch.zeros(2, 5, dtype=torch.float64), atol=1e-10, rtol=0)
    assert out_pre.std() > 5


def test_causal_block_ignores_the_future():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 16, norm_first=True).eval()
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8)
    torch.testing.assert_close(block(x, is_causal=True)[:, :4], block(y, is_causal=True)[:, :4])
    assert not torch.allclose(block(x)[:, :4], block(y)[:, :4])


def test_dropout_only_in_training():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 16, dropout=0.5)
    x = torch.randn(2, 4, 8)
    assert not torch.allclose(block(x), block(x))
    block.eval()
    torch.testing.assert_close(block(x), block(x))


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 16, activation="gelu", norm_first=True).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block(t, is_causal=True), (x,))
    block(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        (dict(embed_dim=10, num_heads=4, ffn_dim=8), ValueError, r"embed_dim \(10\) must be divisible by num_heads \(4\)"),
        (dict(embed_dim=8, num_heads=2, ffn_dim=0), ValueError, "ffn_dim must be a positive int"),
        (dict(embed_dim=0, num_heads=2, ffn_dim=8), ValueError, "embed_dim must be a positive int"),
        (dict(embed_dim=8, num_heads=2, ffn_dim=8, activation="tanh"), ValueError, r"activation must be one of \['gelu', 'relu'\]"),
        (dict(embed_dim=8, num_heads=2, ffn_dim=8, dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
        (dict(embed_dim=8, num_heads=2, ffn_dim=8, norm_first="yes"), TypeError, "norm_first must be a bool"),
    ],
)
def test_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text):
        TransformerBlock(**kwargs)


def test_forward_and_from_torch_errors():
    block = TransformerBlock(8, 2, 16)
    with pytest.raises(ValueError, match=r"x must have embed_dim=8 features \(B, L, 8\), got shape \(2, 3, 6\)"):
        block(torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        block(torch.zeros(3, 8))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        block(torch.zeros(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="valid_lens must have shape"):
        block(torch.zeros(2, 3, 8), valid_lens=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="layer must be a torch.nn.TransformerEncoderLayer, got MultiheadAttention"):
        TransformerBlock.from_torch(nn.MultiheadAttention(8, 2))
