"""The packed projection of MultiHeadAttention: one matrix product for q, k, v.

When ``query is key is value`` the module stacks W_q, W_k, W_v and runs one product; when
``key is value`` it runs one for W_k, W_v. The reference everywhere is the same module
called with equal but distinct tensors (``x.clone()``), which takes the three separate
``nn.Linear`` calls. Outputs and gradients must agree in float64 to rounding (1e-12).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import mhalib
import mhalib.modules as modules_module
from mhalib import KVCache, MultiHeadAttention, apply_rope
from mhalib.functional import combined_mask, packed_linear

TIGHT = dict(rtol=1e-12, atol=1e-12)
D, H = 16, 4


@pytest.fixture
def packed_calls(monkeypatch):
    """Record the number of weights of every packed_linear call the module makes, and pack
    from one token on (the module packs only from PACK_MIN_TOKENS = 2048 tokens on, see
    test_few_tokens_keep_three_products), so that small float64 inputs take the packed path."""
    monkeypatch.setattr(modules_module, "PACK_MIN_TOKENS", 1)
    calls: list[int] = []

    def counting(x, weights, biases):
        calls.append(len(weights))
        return packed_linear(x, weights, biases)

    monkeypatch.setattr(modules_module, "packed_linear", counting)
    return calls


def make(seed: int = 0, **kwargs) -> MultiHeadAttention:
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H, **kwargs).double()
    with torch.no_grad():  # non-zero biases, so a wrong bias slice would show
        for p in mha.parameters():
            if p.dim() == 1:
                p.normal_()
    return mha


def inputs(B: int = 2, L: int = 7, width: int = D, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, L, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def run(mha: nn.Module, query, key, value, **kwargs) -> torch.Tensor:
    out, weights = mha(query, key, value, **kwargs)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
    if weights is not None:
        loss = loss + (weights**2).sum()
    loss.backward()
    return out.detach()


def grads(mha: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in mha.named_parameters() if p.requires_grad}


def assert_same_grads(a: nn.Module, b: nn.Module) -> None:
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys() == {n for n, _ in a.named_parameters()}
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], **TIGHT, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("num_kv_heads", [None, 2, 1])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_packed_equals_three_products(packed_calls, num_kv_heads, need_weights, is_causal, bias):
    packed, separate = make(num_kv_heads=num_kv_heads, bias=bias), make(num_kv_heads=num_kv_heads, bias=bias)
    x = inputs().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = run(packed, x, x, x, is_causal=is_causal, need_weights=need_weights)
    assert packed_calls == [3]  # one product with W_q, W_k, W_v stacked
    ref = run(separate, x_ref, x_ref.clone(), x_ref.clone(), is_causal=is_causal, need_weights=need_weights)
    assert packed_calls == [3]  # distinct tensors: the three Linear calls
    torch.testing.assert_close(out, ref, **TIGHT)
    torch.testing.assert_close(x.grad, x_ref.grad, **TIGHT)
    assert_same_grads(packed, separate)
    assert packed.q_proj.weight.grad.abs().sum() > 0 and packed.v_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_kv_heads", [None, 2])
@pytest.mark.parametrize("kdim", [None, 12])
def test_cross_attention_key_is_value_packs_k_and_v(packed_calls, num_kv_heads, kdim):
    packed = make(num_kv_heads=num_kv_heads, kdim=kdim, vdim=kdim)
    separate = make(num_kv_heads=num_kv_heads, kdim=kdim, vdim=kdim)
    query = inputs(L=5).requires_grad_()
    memory = inputs(L=9, width=kdim or D, seed=2).requires_grad_()
    q_ref, m_ref = (t.detach().clone().requires_grad_() for t in (query, memory))
    valid_lens = torch.tensor([9, 4])
    out = run(packed, query, memory, memory, valid_lens=valid_lens, need_weights=False)
    assert packed_calls == [2]  # W_k, W_v stacked; q_proj on its own
    ref = run(separate, q_ref, m_ref, m_ref.clone(), valid_lens=valid_lens, need_weights=False)
    assert packed_calls == [2]
    torch.testing.assert_close(out, ref, **TIGHT)
    torch.testing.assert_close(query.grad, q_ref.grad, **TIGHT)
    torch.testing.assert_close(memory.grad, m_ref.grad, **TIGHT)
    assert_same_grads(packed, separate)


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_no_stale_weights_after_optimiser_steps(packed_calls, optimizer):
    """Train a packed and a separate twin side by side: same weights, same outputs, every step."""
    packed, separate = make(num_kv_heads=2), make(num_kv_heads=2)
    for mha in (packed, separate):
        # k_proj's bias adds q . b_k to every score of a query's row, which the softmax
        # ignores: its gradient is 0 up to rounding, and Adam would turn that rounding
        # noise into full-size steps of either sign. Leave it out of the training.
        mha.k_proj.bias.requires_grad_(False)
    trained = [[p for p in m.parameters() if p.requires_grad] for m in (packed, separate)]
    opt_p, opt_s = (optimizer(params, lr=1e-3) for params in trained)
    before = packed.k_proj.weight.detach().clone()
    for step in range(4):
        x = inputs(seed=10 + step)
        for mha, opt, args in ((packed, opt_p, (x, x, x)), (separate, opt_s, (x, x.clone(), x.clone()))):
            opt.zero_grad()
            run(mha, *args, is_causal=True, need_weights=False)
            opt.step()
        for (name, p), s in zip(packed.named_parameters(), separate.parameters()):
            assert (p - s).abs().max() < 1e-12, name
        # The packed path reads the weights as they are now: a fresh call agrees with three
        # Linear calls on the same, just-updated module.
        with torch.no_grad():
            y = inputs(seed=99)
            torch.testing.assert_close(packed(y, y, y)[0], packed(y, y.clone(), y.clone())[0], **TIGHT)
    assert not torch.equal(packed.k_proj.weight, before)  # the steps did change W_k
    assert packed_calls.count(3) == 4 + 4  # one per training step, one per check


def test_in_place_weight_edit_is_seen_at_once(packed_calls):
    """Edits that bypass autograd's version counter (``.data``) too: nothing is cached."""
    mha = make()
    x = inputs()
    with torch.no_grad():
        mha.v_proj.weight.mul_(2.0)
        mha.k_proj.bias.add_(1.0)
        torch.testing.assert_close(mha(x, x, x)[0], mha(x, x.clone(), x.clone())[0], **TIGHT)
    mha.q_proj.weight.data.mul_(3.0)  # does not bump q_proj.weight._version
    mha.out_proj.weight.data = mha.out_proj.weight.data.flip(0)
    with torch.no_grad():
        torch.testing.assert_close(mha(x, x, x)[0], mha(x, x.clone(), x.clone())[0], **TIGHT)
    assert packed_calls == [3, 3]


def test_few_tokens_keep_three_products(monkeypatch):
    """Stacking copies the weights on every call, so it pays only for many tokens: below
    PACK_MIN_TOKENS (B * S) the module runs three products, from it on one."""
    calls: list[int] = []
    monkeypatch.setattr(
        modules_module, "packed_linear", lambda x, w, b: calls.append(len(w)) or packed_linear(x, w, b)
    )
    assert modules_module.PACK_MIN_TOKENS == 2048
    mha = make()
    with torch.no_grad():
        for B, L in ((1, 1), (2, 1023), (2, 1024), (1, 2048)):
            x = inputs(B=B, L=L)
            out = mha(x, x, x, is_causal=True, need_weights=False)[0]
            torch.testing.assert_close(out, mha(x, x.clone(), x.clone(), is_causal=True, need_weights=False)[0], **TIGHT)
    assert calls == [3, 3]  # only (2, 1024) and (1, 2048): 2048 tokens each


@pytest.mark.parametrize("num_kv_heads", [None, 2])
@pytest.mark.parametrize("rope", [None, apply_rope])
def test_cache_and_rope_with_the_packed_path(packed_calls, num_kv_heads, rope):
    """Prefill 5 tokens then decode 3 one at a time, packed vs three products: same outputs, same cache."""
    mha = make(num_kv_heads=num_kv_heads, rope=rope).eval()
    tokens = inputs(L=8)
    caches = {"packed": KVCache(), "separate": KVCache()}
    with torch.no_grad():
        for start, stop in ((0, 5), (5, 6), (6, 7), (7, 8)):
            x = tokens[:, start:stop]
            out = mha(x, x, x, is_causal=True, need_weights=False, cache=caches["packed"])[0]
            ref = mha(x, x.clone(), x.clone(), is_causal=True, need_weights=False, cache=caches["separate"])[0]
            torch.testing.assert_close(out, ref, **TIGHT)
        full = mha(tokens, tokens, tokens, is_causal=True, need_weights=False)[0]  # no cache
    torch.testing.assert_close(out, full[:, -1:], **TIGHT)
    torch.testing.assert_close(caches["packed"].key, caches["separate"].key, **TIGHT)
    torch.testing.assert_close(caches["packed"].value, caches["separate"].value, **TIGHT)
    assert packed_calls == [3] * 5


def test_state_dict_and_torch_conversion_unchanged():
    mha = make()
    names = [f"{p}.{w}" for p in ("q_proj", "k_proj", "v_proj", "out_proj") for w in ("weight", "bias")]
    assert list(mha.state_dict()) == names  # no packed tensor among the parameters or buffers
    assert [n for n, _ in mha.named_parameters()] == names and not list(mha.buffers())
    x = inputs()
    twin = MultiHeadAttention(D, H).double()
    twin.load_state_dict(mha.state_dict())
    torch.testing.assert_close(twin(x, x, x)[0], mha(x, x, x)[0], **TIGHT)
    theirs = mha.to_torch()
    torch.testing.assert_close(theirs(x, x, x, need_weights=False)[0], mha(x, x, x, need_weights=False)[0], **TIGHT)
    back = MultiHeadAttention.from_torch(theirs)
    assert list(back.state_dict()) == names
    for name, t in back.state_dict().items():
        assert torch.equal(t, mha.state_dict()[name]), name


def test_hooked_or_unusual_projections_are_called_not_packed(packed_calls):
    """A hook, a bias on only one of them, or a parametrized weight: still right."""
    mha = make()
    x = inputs()
    seen = []
    handle = mha.q_proj.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    out = mha(x, x, x)[0]
    handle.remove()
    assert seen == [x.shape] and packed_calls == [2]  # q_proj was called; k and v still packed
    torch.testing.assert_close(out, mha(x, x.clone(), x.clone())[0], **TIGHT)

    no_bias = make()
    no_bias.k_proj.bias = None  # now q has a bias and k does not: three products
    torch.testing.assert_close(no_bias(x, x, x)[0], no_bias(x, x.clone(), x.clone())[0], **TIGHT)
    assert packed_calls == [2]

    scaled = make()
    torch.nn.utils.parametrize.register_parametrization(scaled.v_proj, "weight", _Double())
    torch.testing.assert_close(scaled(x, x, x)[0], scaled(x, x.clone(), x.clone())[0], **TIGHT)
    assert packed_calls == [2, 3]  # a parametrized Linear is still packed, with its computed weight


class _Double(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2.0 * weight


def test_packed_linear_matches_separate_linears_and_checks_arguments():
    x = inputs()
    weights = [torch.randn(n, D, dtype=torch.float64) for n in (16, 4, 4)]
    biases = [torch.randn(n, dtype=torch.float64) for n in (16, 4, 4)]
    for piece, w, b in zip(packed_linear(x, weights, biases), weights, biases):
        torch.testing.assert_close(piece, torch.nn.functional.linear(x, w, b), **TIGHT)
    with pytest.raises(ValueError, match="one bias"):
        packed_linear(x, weights, biases[:2])
    with pytest.raises(ValueError, match="every weight or none"):
        packed_linear(x, weights, [biases[0], None, None])


def test_sharded_heads_uses_the_shared_functions_not_private_methods():
    """parallel.ShardedHeads and MultiHeadAttention share module-level functions, so a change
    to the module's methods cannot silently break parallel (tests/test_parallel.py runs it)."""
    source = inspect.getsource(mhalib.parallel)
    assert "MultiHeadAttention._" not in source
    assert "check_attention_inputs(" in source and "combined_mask(" in source
    assert not hasattr(MultiHeadAttention, "_check_inputs") and not hasattr(MultiHeadAttention, "_combined_mask")
    B, L, S = 2, 3, 5
    assert combined_mask(None, None, True, num_heads=H, batch=B, L=L, S=S, dtype=torch.float32) is None
    per_head = torch.ones(B * H, L, S, dtype=torch.bool)
    mask = combined_mask(per_head, None, False, num_heads=H, batch=B, L=L, S=S, dtype=torch.float32)
    assert mask.shape == (B, H, L, S)
