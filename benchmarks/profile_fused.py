"""Where the time of the fused path goes: torch.profiler over mhalib and its closest peers.

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/profile_fused.py             # T=1024, 5 calls each
    .venv/bin/python benchmarks/profile_fused.py --T 256 --calls 20

Causal self-attention, float32, 2 threads, B=4, D=256, H=8, the setting of the
performance bar. For each implementation, inference (eval, no_grad) and training
(forward + backward), the profiler's self CPU time of every aten op, summed over
``--calls`` calls, is put in one of these groups:

- projections: the matrix products of the Linear layers (addmm, mm)
- attention kernel: the fused kernel and its backward
- copies and layout: copy_, clone, contiguous, cat, stack, transposes that copy
- mask building: ones, tril, where, logical ops, comparisons
- the rest: views, allocations, autograd bookkeeping, and anything else

and the ops of the largest groups are listed. CPU time counts both threads and waits
less on other jobs than wall time does, but the machine is shared: compare within a run.
Writes benchmarks/results/profile_fused.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402

GROUPS = {
    "projections": ("aten::addmm", "aten::mm", "aten::bmm"),
    "attention kernel": ("flash_attention", "attention_math", "attention_backward"),
    "copies and layout": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::stack", "aten::_to_copy"),
    "mask building": ("aten::ones", "aten::tril", "aten::triu", "aten::where", "aten::logical", "aten::bitwise", "aten::lt", "aten::ge", "aten::masked_fill", "aten::arange"),
}
NAMES = ("mhalib", "mhalib, 3 products", "LLMs packed SDPA", "nn.MultiheadAttention")


def group_of(op: str) -> str:
    for group, keys in GROUPS.items():
        if any(key in op for key in keys):
            return group
    return "the rest"


def profile_calls(fn, calls: int) -> dict[str, float]:
    """Self CPU milliseconds per op name, summed over ``calls`` calls (after one warm-up)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    per_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1e3
    return dict(per_op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "profile_fused.json"))
    args = parser.parse_args()
    torch.set_num_threads(bench_peers.THREADS)
    T, report, lines = args.T, {}, []
    for mode in ("inference", "training"):
        train = mode == "training"
        mods = {name: m.train(train) for name, m in bench_peers.build(T).items()}
        x = torch.randn(bench_peers.B, T, bench_peers.D, generator=torch.Generator().manual_seed(2))
        others = (x.clone(), x.clone())
        if train:
            x, *others = (t.requires_grad_() for t in (x, *others))
        fns = bench_peers.calls(mods, "causal", T, x, tuple(others))

        def step(fn):
            if not train:
                return lambda: bench_peers._no_grad(fn)
            return lambda: fn().sum().backward()

        lines += [f"**{mode}**, T={T}, self CPU ms summed over {args.calls} calls", ""]
        lines.append("| implementation | total | " + " | ".join(GROUPS) + " | the rest | largest ops |")
        lines.append("|---|---:|" + "---:|" * (len(GROUPS) + 1) + "---|")
        report[mode] = {}
        for name in NAMES:
            per_op = profile_calls(step(fns[name]), args.calls)
            groups: dict[str, float] = defaultdict(float)
            for op, ms in per_op.items():
                groups[group_of(op)] += ms
            top = sorted(per_op.items(), key=lambda kv: -kv[1])[:5]
            report[mode][name] = {"total_ms": sum(per_op.values()), "groups_ms": dict(groups), "ops_ms": per_op}
            cells = " | ".join(f"{groups.get(g, 0.0):.0f}" for g in (*GROUPS, "the rest"))
            tops = ", ".join(f"{op.replace('aten::', '')} {ms:.0f}" for op, ms in top)
            lines.append(f"| {name} | {sum(per_op.values()):.0f} | {cells} | {tops} |")
        lines.append("")
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(json.dumps({"T": T, "calls": args.calls, "report": report, "markdown": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
