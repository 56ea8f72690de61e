"""Can splitting the queries make causal attention cheaper than PyTorch's own causal kernel?

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/causal_split.py             # T=1024, 25 rounds
    .venv/bin/python benchmarks/causal_split.py --T 2048 --rounds 9

The question comes from issue 15's inference bar. After packing, mhalib's fused path runs
the same operations as its fastest peer; the fused attention kernel is about two thirds
of the time. PyTorch's CPU flash kernel tiles the queries in blocks of 256 (for 768
queries or more; 64 from 192; else 32) and the keys in blocks of 512, and with
``is_causal=True`` it stops each query block at its last visible key. It still computes,
then masks, the part of each diagonal tile above the diagonal: at T=1024 it computes
62.5% of the (T, T) grid of scores, where 50% is the least a causal pass needs.

Smaller query blocks waste less. Two ways to get them from outside the kernel, each
computing chunks of ``c`` queries at a time:

- **lower-right mask**: chunk i (queries ic .. ic+c-1) attends keys 0 .. ic+c-1 with an
  explicit lower-right causal mask (public API only). The kernel skips nothing, so the
  chunk computes all of its c x (i+1)c scores.
- **merged partial softmaxes**: chunk i attends its own c keys with ``is_causal=True``
  (a square, so top-left = lower-right) and, separately, the keys before it with no mask;
  the two partial results are merged with their log-sum-exps, as the tiled attention of
  chapter 9 merges tiles. Only the private ``torch.ops.aten._scaled_dot_product_flash_
  attention_for_cpu`` returns the log-sum-exp, so this one is an experiment, not a
  candidate for mhalib.

Each variant is first checked equal to the kernel (float64), then all are timed in
interleaved rounds (B=4, H=8, Dh=32, float32, 2 threads, no grad). For each, the share
of the (T, T) score grid it computes, from the kernel's tiling, is printed beside its
time ratio. Writes benchmarks/results/causal_split.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

B, H, DH = 4, 8, 32
KV_BLOCK = 512
RESULTS = Path(__file__).resolve().parent / "results" / "causal_split.json"
FLASH_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # private: returns (out, logsumexp)


def query_block(L: int) -> int:
    """The CPU flash kernel's query block for L queries (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp)."""
    return 256 if L >= 768 else 64 if L >= 192 else 32


def kernel_scores(L: int, S: int, causal: bool) -> int:
    """Scores the kernel computes for L queries and S keys (causal: top-left, stops at the last visible key)."""
    qb = query_block(L)
    return sum(min(qb, L - m) * (min(m + qb, S) if causal else S) for m in range(0, L, qb))


def lower_right_chunks(q: Tensor, k: Tensor, v: Tensor, c: int, masks: dict[int, Tensor]) -> Tensor:
    """Causal attention, c queries at a time, each with an explicit lower-right mask (B, H, T, Dh)."""
    T = q.shape[2]
    outs = []
    for start in range(0, T, c):
        end = min(start + c, T)
        if start not in masks:  # query start + i may see keys 0 .. start + i
            masks[start] = torch.ones(end - start, end, dtype=torch.bool, device=q.device).tril(start)
        outs.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], attn_mask=masks[start]))
    return torch.cat(outs, dim=2)


def merged_chunks(q: Tensor, k: Tensor, v: Tensor, c: int) -> Tensor:
    """Causal attention, c queries at a time: the diagonal square (causal) and the keys before it
    (unmasked), merged by their log-sum-exps. (B, H, T, Dh)."""
    T = q.shape[2]
    out = torch.empty_like(q)
    for start in range(0, T, c):
        end = min(start + c, T)
        diag, lse_diag = FLASH_CPU(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], 0.0, True)
        if start == 0:
            out[:, :, :end] = diag
            continue
        past, lse_past = FLASH_CPU(q[:, :, start:end], k[:, :, :start], v[:, :, :start], 0.0, False)
        # softmax over both parts = the parts' outputs weighted by their shares of the total mass
        share_diag = torch.sigmoid(lse_diag - lse_past).unsqueeze(-1)  # (B, H, c, 1)
        out[:, :, start:end] = past + (diag - past) * share_diag
    return out


def variants(T: int, chunks_mask: list[int], chunks_merge: list[int]) -> dict[str, tuple[Callable[..., Tensor], int]]:
    """name -> (function of q, k, v, scores it computes)."""
    found: dict[str, tuple[Callable[..., Tensor], int]] = {
        "kernel, is_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), kernel_scores(T, T, True)),
        "kernel, no mask (not causal)": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), kernel_scores(T, T, False)),
    }
    for c in chunks_mask:
        masks: dict[int, Tensor] = {}
        scores = sum(min(c, T - s) * min(s + c, T) for s in range(0, T, c))
        found[f"chunks of {c}, lower-right mask"] = (lambda q, k, v, c=c, masks=masks: lower_right_chunks(q, k, v, c, masks), scores)
    for c in chunks_merge:
        scores = sum(kernel_scores(min(c, T - s), min(c, T - s), True) + min(c, T - s) * s for s in range(0, T, c))
        found[f"chunks of {c}, merged partial softmaxes"] = (lambda q, k, v, c=c: merged_chunks(q, k, v, c), scores)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--mask-chunks", default="128,256")
    parser.add_argument("--merge-chunks", default="128,256,512")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    T = args.T
    found = variants(T, [int(c) for c in args.mask_chunks.split(",")], [int(c) for c in args.merge_chunks.split(",")])

    gen = torch.Generator().manual_seed(0)
    q64, k64, v64 = (torch.randn(B, H, T, DH, generator=gen, dtype=torch.float64) for _ in range(3))
    reference = F.scaled_dot_product_attention(q64, k64, v64, is_causal=True)
    q, k, v = q64.float(), k64.float(), v64.float()
    wall: dict[str, list[float]] = {name: [] for name in found}
    diffs = {}
    with torch.no_grad():
        for name, (fn, _) in found.items():
            if "not causal" not in name:
                diffs[name] = (fn(q64, k64, v64) - reference).abs().max().item()
                assert diffs[name] < 1e-12, f"{name} differs from the causal kernel by {diffs[name]:.2e}"
            fn(q, k, v)  # warm-up
        load_start = os.getloadavg()
        for _ in range(args.rounds):
            for name, (fn, _) in found.items():
                start = time.perf_counter()
                fn(q, k, v)
                wall[name].append((time.perf_counter() - start) * 1e3)
    base = wall["kernel, is_causal"]
    rows = []
    print(f"T={T}, B={B}, H={H}, Dh={DH}, float32, 2 threads, {args.rounds} interleaved rounds, load {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'variant':42s} {'scores':>7s} {'median ms':>9s} {'min ms':>7s} {'/kernel (median)':>16s} {'/kernel (min)':>13s}  max diff (float64)")
    for name, (_, scores) in found.items():
        times = wall[name]
        row = {
            "variant": name,
            "share_of_grid": scores / (T * T),
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "ratio_median": statistics.median(times) / statistics.median(base),
            "ratio_min": min(times) / min(base),
            "max_diff_float64": diffs.get(name),
            "times_ms": [round(t, 3) for t in times],
        }
        rows.append(row)
        diff = "-" if row["max_diff_float64"] is None else f"{row['max_diff_float64']:.1e}"
        print(
            f"{name:42s} {row['share_of_grid']:7.1%} {row['median_ms']:9.1f} {row['min_ms']:7.1f} "
            f"{row['ratio_median']:16.2f} {row['ratio_min']:13.2f}  {diff}"
        )
    head = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "T": T,
        "rounds": args.rounds,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    Path(args.out).write_text(json.dumps({**head, "results": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
