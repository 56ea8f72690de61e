"""Tiled attention against the naive softmax(QK^T)V and PyTorch's fused kernel (CPU, float32).

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/bench_tiled.py                 # T in 512 1024 2048 4096, ~10 min
    .venv/bin/python benchmarks/bench_tiled.py --quick         # T in 512 1024, 2 rounds
    .venv/bin/python benchmarks/bench_tiled.py --flex          # also flex_attention (compiles, ~2 min)

It prints Markdown tables and writes ``benchmarks/results/tiled.json`` (``--out``), which
chapter 9 reads for its figure. Shapes: B=4 sequences, H=8 heads, Dh=32, T = L = S.

- Time: ``torch.utils.benchmark.Timer`` on single calls under ``no_grad``, one warm-up
  call each, then ``--runs`` rounds, each round calling every implementation once
  (interleaved, so that load from other jobs hits all of them alike). Ratios of medians and
  of minimums (other jobs only ever add time: the minimums are the steadier).
- Peak extra memory: one fresh interpreter per point. It allocates q, k, v, warms up at
  T=64, reads ``ru_maxrss``, runs one forward pass, reads ``ru_maxrss`` again and prints the
  growth (``/proc/self/status`` VmHWM growth as a cross-check). tracemalloc does not see
  torch's allocator; ``ru_maxrss`` sees every page the process touched. The growth
  includes the (B, H, T, Dh) output, 16 MiB at T=4096, for all three alike.
- Backends: which kernel ``F.scaled_dot_product_attention`` runs on CPU (the aten op names
  the profiler records) and its peak extra memory, for inputs that may make it fall back to
  the math path that stores the scores.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mhalib
from bench_attention import _vm_hwm, interleaved_times

B, H, Dh = 4, 8, 32
THREADS = 2
MiB = 2**20
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "tiled.json"
IMPLS = ("naive", "tiled", "fused")


def make_qkv(T: int, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, T, Dh, generator=gen, dtype=dtype) for _ in range(3))  # (B, H, T, Dh)


def naive(q, k, v, is_causal=False):
    """softmax(q k^T / sqrt(Dh)) v, storing the (B, H, T, T) scores and weights."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, Dh) @ (B, H, Dh, T) -> (B, H, T, T)
    if is_causal:
        scores = scores.masked_fill(~mhalib.causal_mask(q.shape[-2], k.shape[-2]), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T, T) @ (B, H, T, Dh) -> (B, H, T, Dh)


def run(kind: str, q, k, v, is_causal: bool):
    with torch.no_grad():
        if kind == "naive":
            return naive(q, k, v, is_causal)
        if kind == "tiled":
            return mhalib.tiled_attention(q, k, v, is_causal=is_causal)
        if kind == "fused":
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    raise ValueError(kind)


# --- peak memory, one fresh interpreter per point ---------------------------------------------


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(kind: str, T: int, is_causal: bool) -> None:
    torch.set_num_threads(THREADS)
    q, k, v = make_qkv(T)
    small = make_qkv(64)
    run(kind, *small, is_causal)  # warm-up: thread pool, kernels, allocator
    gc.collect()
    before, hwm = _maxrss_mib(), _vm_hwm()
    out = run(kind, q, k, v, is_causal)
    print(_maxrss_mib() - before, (_vm_hwm() - hwm) / 1024)
    del out


def child(*args: str, env: dict | None = None) -> str:
    """Run this script with ``args`` in a fresh interpreter; its stdout."""
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def peak_memory(kind: str, T: int, is_causal: bool) -> tuple[float, float]:
    maxrss, hwm = map(float, child("--memory-child", kind, str(T), str(int(is_causal))).split()[-2:])
    return maxrss, hwm


# --- which backend F.scaled_dot_product_attention runs ---------------------------------------

BACKEND_CASES = {
    "4-D (B, H, T, Dh)": {},
    "4-D, is_causal=True": {"is_causal": True},
    "4-D, dropout_p=0.1": {"dropout_p": 0.1},
    "3-D (B*H, T, Dh)": {"three_d": True},
    "4-D, bool mask (T, T)": {"mask": "bool"},
    "4-D, float mask (T, T)": {"mask": "float"},
    "4-D, query requires grad (forward only)": {"grad": True},
    "4-D, float64": {"dtype": "float64"},
}


def backend_inputs(T: int, case: dict):
    dtype = torch.float64 if case.get("dtype") == "float64" else torch.float32
    q, k, v = make_qkv(T, dtype)
    if case.get("three_d"):
        q, k, v = (t.reshape(B * H, T, Dh) for t in (q, k, v))  # (B, H, T, Dh) -> (B*H, T, Dh)
    if case.get("grad"):
        q.requires_grad_()
    kwargs = {"is_causal": case.get("is_causal", False), "dropout_p": case.get("dropout_p", 0.0)}
    if case.get("mask"):
        allowed = mhalib.causal_mask(T)  # (T, T), True = may attend
        kwargs["attn_mask"] = allowed if case["mask"] == "bool" else torch.zeros(T, T).masked_fill(~allowed, float("-inf"))
    return q, k, v, kwargs


def sdpa_ops(q, k, v, kwargs) -> list[str]:
    """The aten ops whose names say which SDPA kernel ran, in call order."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, **kwargs)
    names = []
    for event in prof.events():
        if "scaled_dot_product" in event.name and event.name not in names:
            names.append(event.name)
    return names


def backend_child(name: str, T: int) -> None:
    torch.set_num_threads(THREADS)
    case = BACKEND_CASES[name]
    q, k, v, kwargs = backend_inputs(T, case)
    small = backend_inputs(64, case)
    F.scaled_dot_product_attention(*small[:3], **small[3])  # warm-up
    gc.collect()
    before, hwm = _maxrss_mib(), _vm_hwm()
    out = F.scaled_dot_product_attention(q, k, v, **kwargs)
    grown, hwm_grown = _maxrss_mib() - before, (_vm_hwm() - hwm) / 1024
    del out
    ops = sdpa_ops(*small[:3], small[3])
    print(json.dumps({"case": name, "T": T, "peak_extra_mib": grown, "vmhwm_mib": hwm_grown, "ops": ops}))


# --- flex_attention with a sliding window ----------------------------------------------------


def flex_child(T: int, window: int, runs: int) -> None:
    """Compile flex_attention (cold inductor cache: the parent passes a fresh directory), time it."""
    torch.set_num_threads(THREADS)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q, k, v = make_qkv(T)

    def sliding(b, h, i, j):
        return (j <= i) & (i - j < window)  # causal, at most `window` keys back

    def causal(b, h, i, j):
        return j <= i

    result: dict = {"T": T, "window": window}
    start = time.perf_counter()
    flex = torch.compile(flex_attention)
    block_mask = create_block_mask(sliding, B=None, H=None, Q_LEN=T, KV_LEN=T, device="cpu")
    result["create_block_mask_s"] = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        out = flex(q, k, v, block_mask=block_mask)
        result["first_call_s"] = time.perf_counter() - start  # compile + one run
        causal_mask = create_block_mask(causal, B=None, H=None, Q_LEN=T, KV_LEN=T, device="cpu")
        start = time.perf_counter()
        flex(q, k, v, block_mask=causal_mask)
        result["first_call_new_mask_s"] = time.perf_counter() - start
        allowed = torch.ones(T, T, dtype=torch.bool).tril() & ~torch.ones(T, T, dtype=torch.bool).tril(-window)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        result["max_abs_diff_vs_masked_sdpa"] = (out - expected).abs().max().item()
        samples = interleaved_times(
            {
                "flex_window": lambda: flex(q, k, v, block_mask=block_mask),
                "sdpa_window_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
                "sdpa_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                "tiled_causal": lambda: mhalib.tiled_attention(q, k, v, is_causal=True),
            },
            runs,
        )
    result["seconds"] = samples
    print(json.dumps(result))


def flex_report(T: int, window: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)  # cold cache: compile from scratch
        start = time.perf_counter()
        result = json.loads(child("--flex-child", str(T), str(window), str(runs), env=env).splitlines()[-1])
        result["child_wall_s"] = time.perf_counter() - start
    return result


# --- the report ------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}x / {min(a) / min(b):.2f}x"


def time_table(times: dict, label: str) -> list[str]:
    lines = [
        f"Time, {label}: median ms (min ms); ratios median / min.",
        "",
        "| T | naive | tiled | fused | tiled / fused | tiled / naive | naive / fused |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T, s in times.items():
        cell = lambda name: f"{statistics.median(s[name]) * 1e3:.0f} ({min(s[name]) * 1e3:.0f})"  # noqa: E731
        lines.append(
            f"| {T} | {cell('naive')} | {cell('tiled')} | {cell('fused')} | {ratio(s['tiled'], s['fused'])} "
            f"| {ratio(s['tiled'], s['naive'])} | {ratio(s['naive'], s['fused'])} |"
        )
    return lines


def memory_table(memory: dict, label: str) -> list[str]:
    lines = [
        f"Peak extra memory (ru_maxrss growth, MiB; VmHWM growth in parentheses), {label}.",
        "",
        "| T | naive | tiled | fused | naive, analytic scores + weights |",
        "|---:|---:|---:|---:|---:|",
    ]
    for T, m in memory.items():
        cells = " | ".join(f"{m[name][0]:.0f} ({m[name][1]:.0f})" for name in IMPLS)
        lines.append(f"| {T} | {cells} | {2 * B * H * int(T) ** 2 * 4 / MiB:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in 512,1024, 2 rounds, no backends")
    parser.add_argument("--sizes", help="comma-separated T (default 512,1024,2048,4096)")
    parser.add_argument("--runs", type=int, help="interleaved rounds per T (default 5; 2 with --quick)")
    parser.add_argument("--no-causal", action="store_true", help="skip the causal measurements")
    parser.add_argument("--flex", action="store_true", help="also compile and time flex_attention")
    parser.add_argument("--flex-T", type=int, default=4096)
    parser.add_argument("--flex-window", type=int, default=256)
    parser.add_argument("--backend-T", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--only-memory", action="store_true",
                        help="re-measure the peak memory only and update it in --out, keeping the rest")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--backend-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--flex-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, T, causal = args.memory_child
        return memory_child(kind, int(T), bool(int(causal)))
    if args.backend_child:
        return backend_child(args.backend_child[0], int(args.backend_child[1]))
    if args.flex_child:
        return flex_child(*map(int, args.flex_child))

    torch.set_num_threads(THREADS)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([512, 1024] if args.quick else [512, 1024, 2048, 4096])
    runs = args.runs or (2 if args.quick else 5)
    modes = [False] if args.no_causal else [False, True]
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": THREADS,
            "note": "2 cores shared with other jobs: timings are noisy, read the ratios of minimums",
        },
        "config": {"B": B, "H": H, "Dh": Dh, "dtype": "float32", "runs": runs,
                   "tiled_blocks": {"block_q": 1024, "block_k": 512}},
        "load_average_start": load_average(),
        "command": "python benchmarks/bench_tiled.py " + " ".join(sys.argv[1:]),
    }
    print(f"# Tiled attention benchmark, {results['date']}")
    print(f"{results['machine']}, B={B}, H={H}, Dh={Dh}, float32, {runs} interleaved rounds; load {load_average()}\n")

    # Memory first: a child inherits the parent's ru_maxrss, so the parent must still be small.
    memory = {}
    for causal in modes:
        key = "causal" if causal else "full"
        memory[key] = {str(T): {name: peak_memory(name, T, causal) for name in IMPLS} for T in sizes}
        print("\n".join(memory_table(memory[key], key)) + "\n", flush=True)
    results["memory_mib"] = memory
    if args.only_memory:
        old = json.loads(args.out.read_text())
        old["memory_mib"] = memory
        old["memory_date"] = results["date"]
        old["memory_command"] = results["command"]
        args.out.write_text(json.dumps(old, indent=1) + "\n")
        print(f"memory updated in {args.out}")
        return

    if not args.quick:
        backends = [json.loads(child("--backend-child", name, str(args.backend_T)).splitlines()[-1])
                    for name in BACKEND_CASES]
        results["backends"] = backends
        print(f"Backends of F.scaled_dot_product_attention, T={args.backend_T}, peak extra memory (MiB):\n")
        print("| inputs | aten ops | peak extra MiB (VmHWM) |\n|---|---|---:|")
        for b in backends:
            print(f"| {b['case']} | {', '.join(b['ops'])} | {b['peak_extra_mib']:.0f} ({b['vmhwm_mib']:.0f}) |")
        print(f"\n(the scores and weights at T={args.backend_T}: {2 * B * H * args.backend_T ** 2 * 4 / MiB:.0f} MiB)\n")

    times: dict = {}
    for causal in modes:
        key = "causal" if causal else "full"
        times[key] = {}
        for T in sizes:
            q, k, v = make_qkv(T)
            fns = {name: (lambda name=name: run(name, q, k, v, causal)) for name in IMPLS}
            times[key][str(T)] = interleaved_times(fns, runs)
            gc.collect()
        print("\n".join(time_table(times[key], key)) + "\n", flush=True)
    results["seconds"] = times

    if args.flex:
        flex = flex_report(args.flex_T, args.flex_window, runs)
        results["flex"] = flex
        s = flex["seconds"]
        print(f"flex_attention, causal sliding window {flex['window']}, T={flex['T']}, cold inductor cache:")
        print(f"- first call (compile + run): {flex['first_call_s']:.1f} s; a new mask: {flex['first_call_new_mask_s']:.1f} s;"
              f" create_block_mask {flex['create_block_mask_s']:.2f} s; max |diff| vs masked sdpa {flex['max_abs_diff_vs_masked_sdpa']:.1e}")
        for name in s:
            print(f"- {name}: median {statistics.median(s[name]) * 1e3:.0f} ms (min {min(s[name]) * 1e3:.0f})")
        print(f"- masked fused / flex: {ratio(s['sdpa_window_mask'], s['flex_window'])}\n")

    results["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # keep parts measured by an earlier run (e.g. flex) unless re-measured
        old = json.loads(args.out.read_text())
        results = {**{k: v for k, v in old.items() if k in ("flex", "backends")}, **results}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average at the end {load_average()}; results written to {args.out}")


if __name__ == "__main__":
    main()
