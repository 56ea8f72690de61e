"""Where the time of the fused path goes: torch.profiler over mhalib and its closest peers.

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/profile_fused.py             # T=1024, 7 calls each
    .venv/bin/python benchmarks/profile_fused.py --T 256 --calls 20

Causal self-attention, float32, 2 threads, B=4, D=256, H=8, the setting of the
performance bar. For each implementation, inference (eval, no_grad) and training
(forward + backward), the profiler's self time of every aten op in one call (its
minimum over ``--calls`` separately profiled calls) is put in one of these groups:

- projections: the matrix products of the Linear layers (addmm, mm)
- attention kernel: the fused kernel and its backward
- copies and layout: copy_, clone, contiguous, cat, stack, transposes that copy
- mask building: ones, tril, where, logical ops, comparisons
- the rest: views, allocations, autograd bookkeeping, and anything else

and the largest ops are listed. The machine is shared: compare within a run.

``--crossover`` also times, at B * L = 1 .. 8192 tokens (B=4 from 1024 on, else B=1),
the module packing its projections (``PACK_MIN_TOKENS`` lowered to 1) against the same
module with three products (distinct equal tensors), interleaved, and the stacking of the
weights alone (``torch.cat``) against the packed product: where packing starts to pay,
which is how ``mhalib.modules.PACK_MIN_TOKENS`` was chosen.
Writes benchmarks/results/profile_fused.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402
import mhalib.modules  # noqa: E402

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
    """Milliseconds per op name in one call: the profiler's self time of every aten op,
    summed within a call, and the minimum of that over ``calls`` separately profiled calls
    (after one warm-up). The profiler times an op by the clock, so a call during which
    another job took the core reads long; the minimum over calls removes most of that."""
    fn()
    best: dict[str, float] = {}
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        per_op: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            per_op[event.key] += event.self_cpu_time_total / 1e3
        for op, ms in per_op.items():
            best[op] = min(best.get(op, ms), ms)
    return best


def crossover(rounds: int = 25) -> tuple[dict[str, object], str]:
    """Causal self-attention forward (eval, no_grad), packed vs three products, by token count."""
    mha = bench_peers.build(8)["mhalib"].eval()
    weights = [p.weight for p in (mha.q_proj, mha.k_proj, mha.v_proj)]
    biases = [p.bias for p in (mha.q_proj, mha.k_proj, mha.v_proj)]
    saved, rows, out = mhalib.modules.PACK_MIN_TOKENS, [], {}
    lines = [
        f"Packed vs three products, forward (eval, no_grad), causal, D={bench_peers.D}: minimum and median "
        f"of {rounds} interleaved calls ({rounds // 3} at 8192 tokens)",
        "",
        "| B x L tokens | packed ms | three products ms | packed / three (min) | packed / three (median) "
        "| torch.cat of the weights ms | packed product alone ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    try:
        for tokens in (1, 16, 64, 256, 1024, 2048, 4096, 8192):
            B = 4 if tokens >= 1024 else 1
            x = torch.randn(B, tokens // B, bench_peers.D)
            x1, x2 = x.clone(), x.clone()
            W, b = torch.cat(weights).detach(), torch.cat(biases).detach()

            def packed():
                mhalib.modules.PACK_MIN_TOKENS = 1
                mha(x, x, x, is_causal=True, need_weights=False)
                mhalib.modules.PACK_MIN_TOKENS = saved

            fns = {
                "packed": packed,
                "three": lambda: mha(x, x1, x2, is_causal=True, need_weights=False),
                "cat": lambda: (torch.cat(weights), torch.cat(biases)),
                "product": lambda: torch.nn.functional.linear(x, W, b),
            }
            with torch.no_grad():
                for fn in fns.values():
                    fn()
                t: dict[str, list[float]] = {name: [] for name in fns}
                for _ in range(rounds if tokens <= 4096 else rounds // 3):
                    for name, fn in fns.items():
                        start = time.perf_counter()
                        fn()
                        t[name].append(time.perf_counter() - start)
            lo = {k: min(v) * 1e3 for k, v in t.items()}
            med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
            out[tokens] = {"min_ms": lo, "median_ms": med}
            lines.append(
                f"| {tokens} | {lo['packed']:.3f} | {lo['three']:.3f} | {lo['packed'] / lo['three']:.2f} | "
                f"{med['packed'] / med['three']:.2f} | {lo['cat']:.3f} | {lo['product']:.3f} |"
            )
    finally:
        mhalib.modules.PACK_MIN_TOKENS = saved
    return out, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=7, help="separately profiled calls per implementation")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "profile_fused.json"))
    parser.add_argument("--crossover", action="store_true", help="also time packed vs three products by token count")
    parser.add_argument("--no-profile", action="store_true", help="only the crossover")
    args = parser.parse_args()
    torch.set_num_threads(bench_peers.THREADS)
    T, report, lines = args.T, {}, []
    if args.crossover:
        report["crossover"], text = crossover()
        lines += [text, ""]
    if args.no_profile:
        print("\n".join(lines))
        Path(args.out).write_text(json.dumps({"report": report, "markdown": "\n".join(lines)}, indent=1) + "\n")
        return
    for mode in ("inference", "training"):
        if args.no_profile:
            break
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

        lines += [f"**{mode}**, T={T}: ms per call, each op's minimum over {args.calls} profiled calls", ""]
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
