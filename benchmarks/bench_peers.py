"""mhalib next to the anchors' own attention classes and torch.nn.MultiheadAttention (CPU).

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/bench_peers.py                 # T in 256 512 1024 2048 4096, 15-30 min
    .venv/bin/python benchmarks/bench_peers.py --sizes 1024 --rounds 9
    .venv/bin/python benchmarks/bench_peers.py --quick         # T in 256 1024, 3 rounds

The peers (benchmarks/peers.py) are the classes of LLMs-from-scratch (chapter 3 and its
bonus packed-qkv SDPA class), Dive into Deep Learning and the Annotated Transformer,
re-typed in our code, plus ``torch.nn.MultiheadAttention``. All get the weights of one
``mhalib.MultiHeadAttention``, and the script first checks (float64, T=48) that every one
computes the same outputs, so the timings compare the same function.

Settings: float32, 2 threads, B=4, D=256, H=8 (Dh=32), self-attention with T = L = S.
- causal: mhalib ``is_causal=True``; LLMs classes their built-in causal mask; d2l
  ``valid_lens`` (B, L) = 1..T (how d2l's decoder masks the future); Annotated
  ``subsequent_mask``; nn.MultiheadAttention ``attn_mask`` + ``is_causal=True``.
- padded: lengths T, 3T/4, T/2, T/4; mhalib ``valid_lens`` (B,); d2l ``valid_lens``;
  Annotated a (B, 1, S) mask; nn.MultiheadAttention ``key_padding_mask``. The LLMs
  classes have causal attention only, so they sit this one out.
- inference: eval mode, ``torch.no_grad()``; training: train mode (dropout 0), forward and
  ``out.sum().backward()``, gradients reset before each call.
- mhalib runs ``need_weights=False`` (its fused path). "mhalib, 3 products" is the same
  module called with equal but distinct query, key and value tensors, which takes the
  three separate projections instead of the packed one.
- "LLMs packed SDPA, again" is a second copy of the fastest peer, timed in the same rounds
  (causal only): the spread between its column and the first copy's is what two runs of
  the same operations differ by here, the resolution of every other ratio.

Timing: one warm-up call each, then ``rounds`` rounds; a round calls every implementation
once, in order (interleaved), so load from other jobs hits all of them alike. Each call
is timed by the wall clock and by the CPU time of the process. The machine is shared:
read the ratios (of the wall medians, of the wall minimums, of the CPU-time medians),
not the milliseconds. The explicit-softmax peers store (B, H, T, T) scores and weights (2 GiB
each at T=4096) and run only up to ``--explicit-max`` (default 2048).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mhalib  # noqa: E402
import peers  # noqa: E402

B, D, H = 4, 256, 8
THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
DEFAULT_ROUNDS = {256: 7, 512: 5, 1024: 11, 2048: 3, 4096: 3}
EXPLICIT = ("LLMs ch03", "d2l", "Annotated")  # store (B, H, T, T) scores
CONTROL = "LLMs packed SDPA, again"  # a second copy of the fastest peer: the ratio two equal runs give
ORDER = ("mhalib", "mhalib, 3 products", "LLMs packed SDPA", CONTROL, "nn.MultiheadAttention", *EXPLICIT)


def build(T: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, nn.Module]:
    """Every implementation with the weights of one mhalib.MultiHeadAttention (biases on)."""
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D, H, dropout=0.0, batch_first=True, dtype=dtype)
    ours = mhalib.MultiHeadAttention.from_torch(theirs)
    others = {
        "LLMs packed SDPA": peers.LLMsPackedSDPAAttention(D, D, H, T, 0.0, qkv_bias=True),
        "LLMs ch03": peers.LLMsCh03MultiHeadAttention(D, D, T, 0.0, H, qkv_bias=True),
        "d2l": peers.D2LMultiHeadAttention(D, H, 0.0, bias=True),
        "Annotated": peers.AnnotatedMultiHeadedAttention(H, D, dropout=0.0),
    }
    others = {name: peers.copy_weights(ours, m.to(dtype)) for name, m in others.items()}
    others[CONTROL] = copy.deepcopy(others["LLMs packed SDPA"])
    return {"mhalib": ours, "nn.MultiheadAttention": theirs, **others}


def calls(mods: dict[str, nn.Module], mask: str, T: int, x: Tensor, others: tuple[Tensor, Tensor]) -> dict[str, Callable[[], Tensor]]:
    """name -> a function computing the (B, T, D) output on x for this mask setting."""
    mha, torch_mha = mods["mhalib"], mods["nn.MultiheadAttention"]
    x1, x2 = others  # equal to x, distinct tensors: mhalib's three-product path
    if mask == "causal":
        not_allowed = ~mhalib.causal_mask(T)  # torch: True = may NOT attend; it wants the mask with is_causal
        causal_lens = torch.arange(1, T + 1).repeat(x.shape[0], 1)  # (B, L): query i sees keys 0..i
        subsequent = peers.annotated_subsequent_mask(T)  # (1, T, T)
        return {
            "mhalib": lambda: mha(x, x, x, is_causal=True, need_weights=False)[0],
            "mhalib, 3 products": lambda: mha(x, x1, x2, is_causal=True, need_weights=False)[0],
            "LLMs packed SDPA": lambda: mods["LLMs packed SDPA"](x),
            CONTROL: lambda: mods[CONTROL](x),
            "nn.MultiheadAttention": lambda: torch_mha(x, x, x, attn_mask=not_allowed, is_causal=True, need_weights=False)[0],
            "LLMs ch03": lambda: mods["LLMs ch03"](x),
            "d2l": lambda: mods["d2l"](x, x, x, causal_lens),
            "Annotated": lambda: mods["Annotated"](x, x, x, subsequent),
        }
    lens = torch.tensor([T, 3 * T // 4, T // 2, T // 4])[: x.shape[0]]  # (B,)
    keep = torch.arange(T)[None, :] < lens[:, None]  # (B, S), True = a real token
    return {
        "mhalib": lambda: mha(x, x, x, valid_lens=lens, need_weights=False)[0],
        "mhalib, 3 products": lambda: mha(x, x1, x2, valid_lens=lens, need_weights=False)[0],
        "nn.MultiheadAttention": lambda: torch_mha(x, x, x, key_padding_mask=~keep, need_weights=False)[0],
        "d2l": lambda: mods["d2l"](x, x, x, lens),
        "Annotated": lambda: mods["Annotated"](x, x, x, keep[:, None, :]),
    }


def check_same_function() -> float:
    """Largest |peer - mhalib| over every implementation and mask, float64, T=48, eval mode."""
    T, worst = 48, 0.0
    mods = {name: m.eval() for name, m in build(T, torch.float64).items()}
    x = torch.randn(B, T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mask in ("causal", "padded"):
        fns = calls(mods, mask, T, x, (x.clone(), x.clone()))
        with torch.no_grad():
            ref = fns["mhalib"]()
            for name, fn in fns.items():
                diff = (fn() - ref).abs().max().item()
                if diff > 1e-10:
                    raise AssertionError(f"{name} ({mask}) differs from mhalib by {diff:.2e}")
                worst = max(worst, diff)
    return worst


def timed_rounds(fns: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call, wall clock and CPU time of the process (both threads): one warm-up
    each, then ``rounds`` interleaved rounds. CPU time does not count the time the process
    waits for a core that another job holds, so on a crowded machine it is the steadier."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def measure(mode: str, mask: str, T: int, rounds: int, explicit_max: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    train = mode == "training"
    mods = {name: m.train(train) for name, m in build(T).items()}
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, D, generator=gen)  # (B, T, D)
    others = (x.clone(), x.clone())
    if train:
        x, *others = (t.requires_grad_() for t in (x, *others))  # leaves, as if from an earlier layer
    fns = {n: f for n, f in calls(mods, mask, T, x, tuple(others)).items() if n not in EXPLICIT or T <= explicit_max}

    def step(fn: Callable[[], Tensor], module: nn.Module) -> Callable[[], None]:
        if not train:
            return lambda: _no_grad(fn)

        def forward_backward() -> None:
            module.zero_grad(set_to_none=True)
            for t in (x, *others):
                t.grad = None
            fn().sum().backward()

        return forward_backward

    module_of = {n: mods["mhalib" if n.startswith("mhalib") else n] for n in fns}
    return timed_rounds({n: step(f, module_of[n]) for n, f in fns.items()}, rounds)


def _no_grad(fn: Callable[[], Tensor]) -> None:
    with torch.no_grad():
        fn()


def summarise(wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    ref_med, ref_min = statistics.median(wall["mhalib"]), min(wall["mhalib"])
    ref_cpu = statistics.median(cpu["mhalib"])
    out = {}
    for name in ORDER:
        if name in wall:
            s = wall[name]
            med, low, med_cpu = statistics.median(s), min(s), statistics.median(cpu[name])
            out[name] = {
                "times_ms": [round(t * 1e3, 3) for t in s],
                "cpu_times_ms": [round(t * 1e3, 3) for t in cpu[name]],
                "median_ms": round(med * 1e3, 3),
                "min_ms": round(low * 1e3, 3),
                "median_cpu_ms": round(med_cpu * 1e3, 3),
                "mhalib_over_this_median": round(ref_med / med, 4),  # below 1: mhalib faster
                "mhalib_over_this_min": round(ref_min / low, 4),
                "mhalib_over_this_median_cpu": round(ref_cpu / med_cpu, 4),
            }
    return out


def markdown(results: list[dict[str, object]]) -> str:
    """One table per (mode, mask): rows T, a column per implementation with mhalib's time
    over its time as 'ratio of wall medians / of wall minimums / of CPU-time medians'."""
    lines = []
    for mode in ("inference", "training"):
        for mask in ("causal", "padded"):
            rows = [r for r in results if r["mode"] == mode and r["mask"] == mask]
            if not rows:
                continue
            names = [n for n in ORDER[1:] if any(n in r["impls"] for r in rows)]
            lines += [
                f"**{mode}, {mask}**: mhalib's time / the peer's, as ratio of wall-clock medians / of wall-clock "
                "minimums / of CPU-time medians; below 1 mhalib is faster",
                "",
            ]
            lines.append("| T | rounds | mhalib ms (median, min) | " + " | ".join(names) + " |")
            lines.append("|---:|---:|---:|" + "---:|" * len(names))
            for r in rows:
                me = r["impls"]["mhalib"]
                cells = []
                for n in names:
                    it = r["impls"].get(n)
                    cells.append(
                        "-"
                        if it is None
                        else f"{it['mhalib_over_this_median']:.2f} / {it['mhalib_over_this_min']:.2f} / "
                        f"{it['mhalib_over_this_median_cpu']:.2f}"
                    )
                lines.append(f"| {r['T']} | {r['rounds']} | {me['median_ms']:.0f}, {me['min_ms']:.0f} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="comma-separated T (default 256,512,1024,2048,4096)")
    parser.add_argument("--rounds", type=int, help="rounds at every T (default: 7, 5, 11, 3, 3 for the default sizes)")
    parser.add_argument("--quick", action="store_true", help="T in 256,1024, 3 rounds")
    parser.add_argument("--explicit-max", type=int, default=2048, help="largest T for the explicit-softmax peers")
    parser.add_argument("--modes", default="inference,training")
    parser.add_argument("--masks", default="causal,padded")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write (default benchmarks/results/peers.json)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    sizes = [int(t) for t in (args.sizes or ("256,1024" if args.quick else "256,512,1024,2048,4096")).split(",")]
    rounds_at = {T: args.rounds or (3 if args.quick else DEFAULT_ROUNDS.get(T, 3)) for T in sizes}

    worst = check_same_function()
    head = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
        "threads": THREADS,
        "shape": {"B": B, "D": D, "H": H, "Dh": D // H},
        "dtype": "float32",
        "mhalib_file": mhalib.__file__,
        "commit": _commit(),
        "load_average_start": os.getloadavg(),
        "same_function_max_abs_diff_float64": worst,
    }
    print(json.dumps(head, indent=1), flush=True)
    results = []
    for T in sizes:
        for mode in args.modes.split(","):
            for mask in args.masks.split(","):
                wall, cpu = measure(mode, mask, T, rounds_at[T], args.explicit_max)
                row = {"mode": mode, "mask": mask, "T": T, "rounds": rounds_at[T], "impls": summarise(wall, cpu)}
                results.append(row)
                ratios = ", ".join(
                    f"{n} {v['mhalib_over_this_median']:.2f}/{v['mhalib_over_this_min']:.2f}/{v['mhalib_over_this_median_cpu']:.2f}"
                    for n, v in row["impls"].items()
                )
                print(f"T={T} {mode} {mask}: mhalib {row['impls']['mhalib']['median_ms']:.0f} ms; {ratios}", flush=True)
                write(args.out, head, results)  # after every setting, so a stopped run keeps what it measured
    print(write(args.out, head, results, done=True))


def write(out: str, head: dict[str, object], results: list[dict[str, object]], done: bool = False) -> str:
    head = {**head, "load_average_now": os.getloadavg(), "complete": done}
    table = markdown(results)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({**head, "results": results, "markdown": table}, indent=1) + "\n")
    return table


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "mhalib"], capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + (" + uncommitted mhalib changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
