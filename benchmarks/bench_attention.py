"""How fast and how big is mhalib's attention next to PyTorch's? (CPU, float32, 2 threads)

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/bench_attention.py            # T in 128 512 1024 2048 4096
    .venv/bin/python benchmarks/bench_attention.py --quick    # T in 128 512 1024, fewer runs
    .venv/bin/python benchmarks/bench_attention.py --sizes 256,1024 --runs 5

Every ratio compares two implementations measured in the same run, interleaved call by
call (A, B, A, B, ...), so a busy machine slows both alike. Each implementation is timed
on ``--runs`` single calls (more for T < 1024: x1024/T, at most x8) with
``torch.utils.benchmark.Timer`` after one warm-up call; a cell shows the ratio of the
medians and the ratio of the minimums (steadier when other jobs share the machine).
Shapes: B=4 sequences, D=256 (embed_dim), H=8 heads, Dh=32, T = L = S tokens.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import resource
import statistics
import subprocess
import sys

import torch
from torch import nn
from torch.utils.benchmark import Timer

import mhalib

B, D, H = 4, 256, 8
Dh = D // H
THREADS = 2
MiB = 2**20


def interleaved_times(fns: dict[str, callable], runs: int) -> dict[str, list[float]]:
    """Seconds per call of each function (``runs`` samples), calls interleaved across the functions."""
    timers = {name: Timer(stmt="fn()", globals={"fn": fn}, num_threads=THREADS) for name, fn in fns.items()}
    for fn in fns.values():  # warm-up: first-call allocations, kernel selection
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(1).median)
    return samples


def ratio_cell(samples: dict[str, list[float]], ours: str, theirs: str) -> str:
    """'median ratio / min ratio (median ms / median ms)'. On a shared machine other jobs only
    ever add time, so the ratio of the minimums is the steadier of the two."""
    a, b = samples[ours], samples[theirs]
    med_a, med_b = statistics.median(a), statistics.median(b)
    return f"{med_a / med_b:.2f}x / {min(a) / min(b):.2f}x ({med_a * 1e3:.0f} / {med_b * 1e3:.0f} ms)"


def make_modules(train: bool) -> tuple[mhalib.MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(D, H, dropout=0.0, batch_first=True).train(train)
    ours = mhalib.MultiHeadAttention.from_torch(theirs).train(train)
    return ours, theirs


def bench_inference(T: int, runs: int) -> dict[str, float]:
    """Causal self-attention, eval mode, no_grad, need_weights=False (the fused path)."""
    ours, theirs = make_modules(train=False)
    x = torch.randn(B, T, D)  # (B, T, D)
    not_allowed = ~mhalib.causal_mask(T)  # torch: True = may NOT attend; it requires the mask with is_causal

    def mine():
        with torch.no_grad():
            return ours(x, x, x, is_causal=True, need_weights=False)

    def torchs():
        with torch.no_grad():
            return theirs(x, x, x, attn_mask=not_allowed, is_causal=True, need_weights=False)

    return interleaved_times({"mhalib": mine, "torch": torchs}, runs)


def bench_training(T: int, runs: int) -> dict[str, float]:
    """Forward + backward of causal self-attention, train mode, dropout 0, need_weights=False."""
    ours, theirs = make_modules(train=True)
    x = torch.randn(B, T, D, requires_grad=True)  # as if it came from an earlier layer
    not_allowed = ~mhalib.causal_mask(T)

    def mine():
        ours.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = ours(x, x, x, is_causal=True, need_weights=False)
        out.sum().backward()

    def torchs():
        theirs.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = theirs(x, x, x, attn_mask=not_allowed, is_causal=True, need_weights=False)
        out.sum().backward()

    return interleaved_times({"mhalib": mine, "torch": torchs}, runs)


def bench_explicit(T: int, runs: int) -> dict[str, float]:
    """Attention that returns its weights, on (B, H, T, Dh) tensors, no mask, no_grad."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, Dh, generator=gen) for _ in range(3))  # (B, H, T, Dh)

    def mine():
        with torch.no_grad():
            return mhalib.scaled_dot_product_attention(q, k, v)

    def plain():
        with torch.no_grad():
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(Dh), dim=-1)  # (B, H, T, T)
            return weights @ v, weights

    return interleaved_times({"mhalib": mine, "plain": plain}, runs)


# --- peak memory, in a fresh interpreter per measurement ------------------------------------


def memory_child(kind: str, T: int) -> None:
    """Print the growth of peak RSS (MiB) caused by one forward pass at length T."""
    torch.set_num_threads(THREADS)
    ours, theirs = make_modules(train=False)
    x = torch.randn(B, T, D)
    not_allowed = ~mhalib.causal_mask(T)

    def run(inp, mask):
        with torch.no_grad():
            if kind == "fused":
                return ours(inp, inp, inp, is_causal=True, need_weights=False)
            if kind == "explicit":
                return ours(inp, inp, inp, is_causal=True, need_weights=True)
            if kind == "torch":
                return theirs(inp, inp, inp, attn_mask=mask, is_causal=True, need_weights=False)
            raise ValueError(kind)

    run(x[:, :64], not_allowed[:64, :64])  # warm-up: thread pool, kernels, allocator
    gc.collect()
    before, hwm_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _vm_hwm()  # KiB on Linux
    out = run(x, not_allowed)
    after, hwm_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _vm_hwm()
    del out
    print((after - before) / 1024, (hwm_after - hwm_before) / 1024)


def _vm_hwm() -> int:
    """Peak RSS of this process's own memory map in KiB (/proc/self/status VmHWM), a cross-check.

    Linux carries ru_maxrss over exec() from the parent, so a child started by a big parent
    starts with the parent's peak; VmHWM starts afresh with the new memory map.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def peak_memory(kind: str, T: int) -> tuple[float, float]:
    """(ru_maxrss growth, VmHWM growth) in MiB of one forward pass, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__, "--memory-child", kind, str(T)], capture_output=True, text=True, check=True
    )
    maxrss, hwm = map(float, result.stdout.split()[-2:])
    return maxrss, hwm


def memory_report(memory_T: int) -> str:
    explicit_T = min(memory_T, 2048)
    fused = peak_memory("fused", memory_T)
    theirs = peak_memory("torch", memory_T)
    explicit = peak_memory("explicit", explicit_T)
    scale = (memory_T / explicit_T) ** 2
    analytic = 2 * B * H * memory_T * memory_T * 4 / MiB  # scores + weights, float32
    return "\n".join(
        [
            "Peak RSS growth of one causal forward pass (eval, no_grad), fresh process each, "
            "ru_maxrss (VmHWM cross-check):",
            f"- mhalib fused path (need_weights=False), T={memory_T}: {fused[0]:.0f} MiB ({fused[1]:.0f})",
            f"- torch.nn.MultiheadAttention (need_weights=False, with its mask), T={memory_T}: "
            f"{theirs[0]:.0f} MiB ({theirs[1]:.0f})",
            f"- mhalib explicit path (need_weights=True), T={explicit_T}: {explicit[0]:.0f} MiB ({explicit[1]:.0f}); "
            f"x{scale:.0f} -> about {explicit[0] * scale:.0f} MiB at T={memory_T}; "
            f"analytically its scores + weights alone are {analytic:.0f} MiB",
        ]
    )


# --- import time ----------------------------------------------------------------------------

IMPORT_TIMES = """
import time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
import mhalib
print(after_torch - start, time.perf_counter() - after_torch)
"""


def import_times(repeats: int = 5) -> tuple[float, float]:
    """Best of `repeats` fresh interpreters: (import torch, import mhalib on top of it), seconds."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", IMPORT_TIMES], capture_output=True, text=True, check=True).stdout
        runs.append(tuple(map(float, out.split())))
    return min(t for t, _ in runs), min(m for _, m in runs)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in 128,512,1024, 2 runs, memory at T=1024")
    parser.add_argument("--sizes", help="comma-separated sequence lengths T (default 128,512,1024,2048,4096)")
    parser.add_argument("--runs", type=int, help="timed calls per implementation and size (default 3; 2 with --quick)")
    parser.add_argument("--explicit-max", type=int, default=2048, help="largest T for the explicit path (default 2048)")
    parser.add_argument("--memory-T", type=int, help="T of the fused-path memory measurement (default 4096)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return

    torch.set_num_threads(THREADS)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([128, 512, 1024] if args.quick else [128, 512, 1024, 2048, 4096])
    runs = args.runs or (2 if args.quick else 3)
    memory_T = args.memory_T or (1024 if args.quick else 4096)

    print(f"# mhalib attention benchmark, {datetime.date.today()}")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, float32, B={B}, D={D}, H={H}, Dh={Dh}, "
        f"median of {runs} interleaved runs per T >= 1024 (x1024/T, at most x8, below)\n"
    )
    # Memory first: a child process inherits the parent's ru_maxrss, so the parent must still be small.
    memory_text = "" if args.no_memory else memory_report(memory_T)
    print("Cells: ratio of medians / ratio of minimums (median ms of mhalib / of the other); below 1x mhalib is faster.\n")
    print("| T | inference: mhalib / torch MHA | training fwd+bwd: mhalib / torch MHA | with weights: mhalib sdpa / plain |")
    print("|---:|---:|---:|---:|")
    for T in sizes:
        # Short calls are the noisiest on a shared machine and the cheapest: time more of them.
        runs_T = runs * min(8, max(1, 1024 // T))
        inf = bench_inference(T, runs_T)
        trn = bench_training(T, runs_T)
        cells = [ratio_cell(inf, "mhalib", "torch"), ratio_cell(trn, "mhalib", "torch")]
        if T <= args.explicit_max:
            exp = bench_explicit(T, runs_T)
            cells.append(ratio_cell(exp, "mhalib", "plain"))
        else:
            cells.append(f"not run (T > --explicit-max {args.explicit_max})")
        print(f"| {T} | " + " | ".join(cells) + " |", flush=True)
        gc.collect()

    if not args.no_memory:
        print("\n" + memory_text)

    torch_s, mhalib_s = import_times()
    print(f"\nimport torch {torch_s:.2f} s; import mhalib on top of it {mhalib_s * 1e3:.0f} ms (best of 5 fresh interpreters)")


if __name__ == "__main__":
    main()
