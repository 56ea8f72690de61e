"""mhalib.parallel: two gloo processes on 127.0.0.1 against the single-process module.

Each spawn starts two fresh interpreters (a few seconds on a busy machine), so the
checks are grouped: one spawn per mask kind. ``spawn``'s timeout makes a hung rank fail
the test instead of hanging CI.
"""

from __future__ import annotations

import pytest
import torch

import mhalib
from mhalib import parallel

TIMEOUT = 90.0  # seconds per spawn: generous for a loaded 2-core CI machine


MASKS = ["none", "causal", "bool", "cross"]


@pytest.fixture(scope="module")
def two_process_results():
    """One launch of two processes for every case (launching costs seconds, the cases don't)."""
    compare, dtensor = parallel.compare_with_single_process, parallel.dtensor_compare
    cases = {mask: (compare, {"mask": mask}) for mask in MASKS}
    cases["torch"] = (compare, {"reduce": "torch"})
    cases["dtensor"] = (dtensor, {"fix_num_heads": True})
    cases["dtensor, num_heads left at H"] = (dtensor, {"fix_num_heads": False})
    results = parallel.spawn(parallel.run_cases, 2, list(cases.values()), timeout=TIMEOUT)
    return dict(zip(cases, results))


@pytest.mark.parametrize("mask", MASKS)
def test_two_processes_equal_single_process_float64(two_process_results, mask):
    diffs = dict(two_process_results[mask])
    ratio = diffs.pop("q_proj.weight.grad ratio")
    assert abs(diffs.pop("smallest gradient ratio") - 1.0) < 1e-12
    assert abs(diffs.pop("largest gradient ratio") - 1.0) < 1e-12
    sent = diffs.pop("bytes all-reduced")
    assert sent == 2 * 5 * 16 * 8  # one (B, L, D) float64 tensor per forward
    assert abs(ratio - 1.0) < 1e-12
    expected = {"output", "query.grad", "out_proj.bias.grad", "out_proj.weight.grad"}
    expected |= {f"{p}_proj.{w}.grad" for p in "qkv" for w in ("weight", "bias")}
    if mask == "cross":
        expected.add("key.grad")
    assert set(diffs) == expected
    for name, diff in diffs.items():
        assert diff < 1e-10, (name, diff)  # float64: rounding only (values are O(10))


def test_torch_functional_all_reduce_multiplies_the_gradient_by_world_size(two_process_results):
    diffs = two_process_results["torch"]
    assert diffs["output"] < 1e-12  # the forward pass is right...
    assert abs(diffs["q_proj.weight.grad ratio"] - 2.0) < 1e-12  # ...the gradient doubled
    # ...and so did every other gradient, the input's and the biases' included
    assert abs(diffs["smallest gradient ratio"] - 2.0) < 1e-12
    assert abs(diffs["largest gradient ratio"] - 2.0) < 1e-12


def test_dtensor_with_num_heads_per_rank_equals_single_process(two_process_results):
    diffs = two_process_results["dtensor"]
    assert set(diffs) == {"output"} | {f"{p}_proj.weight.grad" for p in ("q", "k", "v", "out")}
    for name, diff in diffs.items():
        assert diff < 1e-10, (name, diff)


def test_dtensor_with_num_heads_left_at_h_runs_and_is_wrong(two_process_results):
    diffs = two_process_results["dtensor, num_heads left at H"]
    assert diffs["output"] > 1e-2  # no error raised, and a wrong output


def test_shard_weights_are_rows_and_columns_of_the_full_module():
    torch.manual_seed(0)
    mha = mhalib.MultiHeadAttention(12, 6)
    shards = [parallel.shard_heads(mha, r, 3) for r in range(3)]
    torch.testing.assert_close(torch.cat([s.q_proj.weight for s in shards]), mha.q_proj.weight)
    torch.testing.assert_close(torch.cat([s.v_proj.bias for s in shards]), mha.v_proj.bias)
    torch.testing.assert_close(torch.cat([s.out_proj.weight for s in shards], dim=1), mha.out_proj.weight)
    assert shards[0].out_proj.bias is not None
    assert shards[1].out_proj.bias is None and shards[2].out_proj.bias is None
    assert [s.local_heads for s in shards] == [2, 2, 2]
    # A copy: training the shard does not change the full module.
    assert shards[0].q_proj.weight.data_ptr() != mha.q_proj.weight.data_ptr()


def test_partials_sum_to_the_full_output_in_one_process():
    torch.manual_seed(1)
    mha = mhalib.MultiHeadAttention(16, 4).double()
    torch.nn.init.normal_(mha.out_proj.bias)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    mask = torch.rand(2 * 4, 6, 6) < 0.7  # PyTorch's per-head (B*H, L, S) layout
    ref, _ = mha(x, x, x, attn_mask=mask)
    for P in (1, 2, 4):
        total = sum(parallel.shard_heads(mha, r, P).partial(x, x, x, attn_mask=mask) for r in range(P))
        torch.testing.assert_close(total, ref, rtol=0, atol=1e-12)
        total = sum(parallel.shard_heads(mha, r, P).partial(x, x, x, is_causal=True) for r in range(P))
        torch.testing.assert_close(total, mha(x, x, x, is_causal=True)[0], rtol=0, atol=1e-12)


def test_world_size_must_divide_the_heads():
    mha = mhalib.MultiHeadAttention(12, 6)
    with pytest.raises(ValueError, match=r"num_heads \(6\) must be divisible by world_size \(4\)"):
        parallel.shard_heads(mha, 0, 4)
    with pytest.raises(ValueError, match="rank must be in"):
        parallel.shard_heads(mha, 3, 3)
    with pytest.raises(TypeError, match="mha must be a mhalib.MultiHeadAttention"):
        parallel.shard_heads(torch.nn.Linear(2, 2), 0, 1)


def test_forward_without_a_process_group_says_so():
    shard = parallel.shard_heads(mhalib.MultiHeadAttention(8, 2), 0, 2)
    x = torch.randn(1, 3, 8)
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard(x, x, x)


def test_spawn_refuses_a_function_it_cannot_import():
    def local(rank, world_size):
        return rank

    with pytest.raises(ValueError, match="must be importable"):
        parallel.spawn(local, 2)


def test_a_failing_rank_raises_with_its_traceback():
    with pytest.raises(RuntimeError, match=r"(?s)rank \d of 2 failed.*mask must be"):
        cases = [(parallel.compare_with_single_process, {"mask": "no such mask"})]
        parallel.spawn(parallel.run_cases, 2, cases, timeout=TIMEOUT)


def test_a_hung_rank_times_out():
    with pytest.raises(TimeoutError):
        parallel.spawn(parallel.sleep_on_rank, 2, 1, 60.0, timeout=8.0)
