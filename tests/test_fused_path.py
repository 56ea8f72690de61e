"""What MultiHeadAttention's docstring says about its fused path, dropout and initialisation.

The fused path (``need_weights=False``) calls ``F.scaled_dot_product_attention``; which
kernel PyTorch then runs decides whether the (L, S) weights are built in memory. The
profiler names the kernel, so the docstring's claim is checked against PyTorch itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import profile

import mhalib

MATH = "aten::_scaled_dot_product_attention_math"
FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"


def kernels(module: mhalib.MultiHeadAttention, x: torch.Tensor, **kwargs) -> set[str]:
    """Names of the attention kernels that one forward pass runs."""
    with profile() as prof:
        module(x, x, x, need_weights=False, **kwargs)
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs", [{}, {"valid_lens": torch.tensor([16, 5])}, {"is_causal": True}],
                         ids=["no mask", "padding", "causal"])
def test_fused_path_without_dropout_does_not_build_the_weights(x: torch.Tensor, kwargs: dict) -> None:
    module = mhalib.MultiHeadAttention(32, 4, dropout=0.1).eval()  # eval: dropout off
    names = kernels(module, x, **kwargs)
    assert FLASH_CPU in names
    assert MATH not in names


def test_fused_path_with_dropout_in_training_falls_back_to_the_math_path(x: torch.Tensor) -> None:
    module = mhalib.MultiHeadAttention(32, 4, dropout=0.1).train()
    names = kernels(module, x)
    assert MATH in names
    assert FLASH_CPU not in names


def test_dropout_acts_on_the_weights_only_in_training(x: torch.Tensor) -> None:
    p = 0.25
    module = mhalib.MultiHeadAttention(32, 4, dropout=p)
    module.eval()
    out_eval_1, w_eval = module(x, x, x)
    out_eval_2, _ = module(x, x, x)
    assert torch.equal(out_eval_1, out_eval_2)
    torch.testing.assert_close(w_eval.sum(dim=-1), torch.ones(2, 4, 16))

    module.train()
    torch.manual_seed(1)
    out_train_1, w_train = module(x, x, x)
    out_train_2, _ = module(x, x, x)
    assert not torch.allclose(out_train_1, out_train_2)
    kept = w_train != 0
    dropped_share = 1 - kept.float().mean().item()
    assert abs(dropped_share - p) < 0.05
    # the weights that survive are scaled by 1 / (1 - p), so rows no longer sum to 1
    torch.testing.assert_close(w_train[kept], w_eval[kept] / (1 - p))
    assert (w_train.sum(dim=-1) - 1).abs().max() > 0.1


def test_initialisation_keeps_unit_variance_where_nn_linear_gives_a_third() -> None:
    D = 256
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, D, generator=gen)  # (B, L, D), variance 1
    torch.manual_seed(0)
    ours = mhalib.MultiHeadAttention(D, 8)
    default = nn.Linear(D, D)
    theirs = nn.MultiheadAttention(D, 8, batch_first=True)
    with torch.no_grad():
        var_ours = [proj(x).var().item() for proj in (ours.q_proj, ours.k_proj, ours.v_proj, ours.out_proj)]
        var_default = default(x).var().item()
        var_theirs_q = (x @ theirs.in_proj_weight[:D].T).var().item()
    assert all(abs(v - 1.0) < 0.1 for v in var_ours), var_ours
    assert abs(var_default - 1 / 3) < 0.05
    assert abs(var_theirs_q - 1 / 2) < 0.05  # Xavier on the packed (3D, D) weight
