"""Decoding with a KV cache vs recomputing everything, and the cache's size vs KV heads.

Not part of the test suite. Run it from the repository root::

    .venv/bin/python benchmarks/bench_decoding.py                 # small decoder, 512 tokens; SmolLM2, 64
    .venv/bin/python benchmarks/bench_decoding.py --smollm2 64,128
    .venv/bin/python benchmarks/bench_decoding.py --no-smollm2     # the small decoder only (~1 min)

Greedy decoding with ``Decoder.generate(ids, n, use_cache=True/False)``: both runs must give
the same tokens (checked), and both are timed in the same run, one after the other, so the
ratio is what to read (absolute times depend on how busy the machine is). One thread.

1. A small random ``mhalib.Decoder``: 2 layers, D = 256, H = 8 (plain MHA), SwiGLU width
   1024, vocabulary 1000, a 16-token prompt, 512 new tokens.
2. SmolLM2-135M-Instruct (30 layers, D = 576, 9 query heads, 3 KV heads), the chat prompt
   of chapter 8 (37 tokens), 64 (and 128) new tokens, end-of-turn ignored.
3. Cache bytes per token and for a full 8192-token context, float32, for 9, 3 and 1 KV
   heads at SmolLM2's shape: ``2 * layers * Hkv * Dh * 4``, checked against ``KVCache.nbytes``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

import mhalib


def timed_generate(model, prompt, n, use_cache):
    start = time.perf_counter()
    ids = model.generate(prompt, n, use_cache=use_cache)
    return ids, time.perf_counter() - start


def compare(name, model, prompt, n):
    cached, t_cache = timed_generate(model, prompt, n, True)
    recomputed, t_full = timed_generate(model, prompt, n, False)
    assert torch.equal(cached, recomputed), f"{name}: cached and recomputed tokens differ"
    return (f"| {name} | {prompt.shape[1]} | {n} | {t_full:.1f} s ({t_full / n * 1e3:.0f} ms/token) | "
            f"{t_cache:.1f} s ({t_cache / n * 1e3:.0f} ms/token) | {t_full / t_cache:.1f}x |")


def cache_bytes_rows(layers=30, H=9, D=576, tokens=50):
    rows = []
    x = torch.randn(1, tokens, D)
    for Hkv in (9, 3, 1):
        layer = mhalib.MultiHeadAttention(D, H, bias=False, num_kv_heads=Hkv)
        cache = mhalib.KVCache()
        with torch.no_grad():
            layer(x, x, x, is_causal=True, cache=cache)
        per_token = 2 * layers * Hkv * (D // H) * 4
        assert layers * cache.nbytes == per_token * tokens
        kind = {H: "MHA", 1: "MQA"}.get(Hkv, "GQA")
        rows.append(f"| {Hkv} ({kind}) | {per_token:,} | {per_token * 8192 / 2**20:,.0f} MiB | {H // Hkv}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="new tokens for the small decoder")
    parser.add_argument("--smollm2", default="64", help="comma-separated new-token counts for SmolLM2")
    parser.add_argument("--no-smollm2", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    print(f"# bench_decoding, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, 1 thread\n")
    print("| model | prompt | new tokens | without a cache | with a cache | ratio |")
    print("|---|---|---|---|---|---|")
    small = mhalib.Decoder(vocab_size=1000, embed_dim=256, num_heads=8, num_kv_heads=8, num_layers=2,
                           ffn_dim=1024).eval()
    prompt = torch.randint(0, 1000, (1, 16))
    print(compare("random decoder, 2 layers, D=256, H=8", small, prompt, args.tokens), flush=True)
    if not args.no_smollm2:
        from mhalib.pretrained import smollm2

        model = smollm2.load_smollm2()
        ids = torch.tensor([model.tokenizer.encode(smollm2.chat_prompt("What is the capital of France?")).ids])
        for n in (int(s) for s in args.smollm2.split(",")):
            print(compare("SmolLM2-135M-Instruct", model, ids, n), flush=True)

    print("\nCache size, float32, SmolLM2's shape (30 layers, 9 query heads, Dh = 64):\n")
    print("| KV heads | bytes per token | 8192 tokens | smaller than MHA |")
    print("|---|---|---|---|")
    print("\n".join(cache_bytes_rows()))


if __name__ == "__main__":
    main()
