"""SmolLM2-135M-Instruct rebuilt from mhalib parts against ``transformers`` on the same GGUF file.

``transformers`` (with ``accelerate``) is the reference here and only here: it reads the
same ``SmolLM2-135M-Instruct.Q4_1.gguf``, dequantizes it to float32 and runs its own Llama
with eager attention. Both models are loaded once for the module (20-60 s). The measured
differences are printed (``pytest -s``) for the chapter to quote.
"""

from __future__ import annotations

import os

import pytest
import torch

from mhalib import KVCache
from mhalib.pretrained import smollm2
from mhalib.pretrained._files import sha256_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub

TEXTS = [
    smollm2.chat_prompt("What is the capital of France?"),  # ChatML markers
    "<|im_start|>user\nhi<|im_end|><|endoftext|>",
    "12345 and 3.14159, 2024-11-23: 1,000,000",  # digits
    "café naïve Zürich résumé façade Ångström",  # accents
    "emoji 😀🚀 and 漢字, ok",  # emoji, CJK
    "def f(x):\n    return x**2  # square\n\tif a != b: {}",  # code, tabs
    "  two  spaces   three\n\n\nnewlines",
]


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # much faster than 2 threads on a busy 2-core machine
    transformers = pytest.importorskip("transformers")
    path = smollm2.gguf_path()
    ours = smollm2.load_smollm2()
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    yield ours, ref, ref_tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompt_ids(models):
    ours, _, _ = models
    return torch.tensor([ours.tokenizer.encode(TEXTS[0]).ids])  # (1, 37)


def test_the_file_is_the_pinned_one():
    assert sha256_of(smollm2.gguf_path()) == smollm2.SMOLLM2_SHA256


def test_load_refuses_a_file_with_another_digest(monkeypatch):
    monkeypatch.setattr(smollm2, "SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="expected 0000"):
        smollm2.load_smollm2()


def test_architecture_from_the_metadata(models):
    ours, ref, _ = models
    assert ours.num_layers == ref.config.num_hidden_layers == 30
    attention = ours.blocks[0].attention
    assert (attention.num_heads, attention.num_kv_heads, attention.head_dim) == (9, 3, 64)
    assert attention.k_proj.weight.shape == (3 * 64, 576)
    assert ours.blocks[0].attention.rope.base == 100000.0 == ref.config.rope_parameters["rope_theta"]
    assert ours.embed.weight.shape == (49152, 576)
    assert all(p.dtype == torch.float32 for p in ours.parameters()) and not ours.training
    # Tied embeddings: the reference's output head is its embedding matrix, equal to ours.
    assert torch.equal(ref.lm_head.weight, ours.embed.weight)


def test_how_the_file_stores_its_tensors(models):
    """Chapter 8 says which tensors are 4-bit: all but the embedding (8-bit) and the norms."""
    ours, ref, _ = models
    kinds = ours.gguf_tensor_types
    assert len(kinds) == 1 + 30 * 9 + 1  # embedding, 9 per layer, the final norm
    assert [name for name, kind in kinds.items() if kind == "Q8_0"] == ["token_embd.weight"]
    assert {name for name, kind in kinds.items() if kind == "F32"} == {
        name for name in kinds if name.endswith("norm.weight")
    }
    assert {kind for name, kind in kinds.items() if not name.endswith("norm.weight") and name != "token_embd.weight"} == {"Q4_1"}
    assert ours.gguf_metadata["llama.context_length"] == ref.config.max_position_embeddings == 8192


@pytest.mark.parametrize("text", TEXTS, ids=["chatml", "markers", "digits", "accents", "emoji", "code", "spaces"])
def test_tokenizer_ids_match_transformers(models, text):
    ours, _, ref_tokenizer = models
    ids = ours.tokenizer.encode(text).ids
    assert ids == ref_tokenizer(text)["input_ids"]
    assert ours.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_chatml_markers_are_single_tokens(models):
    tok = models[0].tokenizer
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert tok.encode("<|im_start|>assistant").ids[0] == 1
    assert tok.encode("2024").tokens == ["2", "0", "2", "4"]  # digits one by one


def test_weights_match_transformers_name_by_name(models):
    # Every parameter is the reference's, after our name table and the Q/K row order.
    ours, ref, _ = models
    theirs = dict(ref.named_parameters())
    rename = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    parts = {"norm1": "input_layernorm", "norm2": "post_attention_layernorm", "attention": "self_attn",
             "out_proj": "o_proj", "ffn": "mlp"}
    for name, p in ours.named_parameters():
        if name not in rename:
            pieces = name.split(".")
            rename[name] = "model.layers." + ".".join(parts.get(piece, piece) for piece in pieces[1:])
        assert torch.equal(p, theirs[rename[name]]), name
    assert len(rename) == len(list(ours.parameters())) == 1 + 30 * 9 + 1


def test_logits_and_weights_match_transformers(models, prompt_ids):
    ours, ref, _ = models
    with torch.no_grad():
        logits, weights = ours(prompt_ids, need_weights=True)  # (1, 37, V), (30, 1, 9, 37, 37)
        fused, none = ours(prompt_ids)
        expected = ref(prompt_ids, output_attentions=True)
    expected_weights = torch.stack(expected.attentions)  # 30 x (1, 9, 37, 37)
    assert logits.shape == (1, 37, 49152) and weights.shape == expected_weights.shape and none is None
    logit_diff = (logits - expected.logits).abs().max().item()
    fused_diff = (fused - expected.logits).abs().max().item()
    weight_diff = (weights - expected_weights).abs().max().item()
    print(f"\nSmolLM2 vs transformers: max |logit diff| {logit_diff:.2e} (explicit), {fused_diff:.2e} (fused), "
          f"max |weight diff| {weight_diff:.2e}, logits up to {expected.logits.abs().max().item():.1f}")
    assert logit_diff < 1e-3 and fused_diff < 1e-3 and weight_diff < 1e-4
    assert torch.equal(logits.argmax(-1), expected.logits.argmax(-1))


def test_the_remaining_difference_is_the_precision_of_the_rope_angles(models, prompt_ids):
    # mhalib.apply_rope computes its angles in float64; the reference in float32. With the
    # reference's float32 angles plugged into the rope hook, the two models agree exactly.
    ours, ref, _ = models

    class RopeFloat32Angles(torch.nn.Module):
        def forward(self, x, positions, base=100000.0):
            Dh = x.shape[-1]
            inv_freq = 1.0 / (base ** (torch.arange(0, Dh, 2, dtype=torch.int64).float() / Dh))
            theta = positions.float()[:, None] * inv_freq  # float32 (L, Dh/2)
            cos, sin = torch.cat((theta, theta), -1).cos(), torch.cat((theta, theta), -1).sin()
            x1, x2 = x.chunk(2, dim=-1)
            return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    ropes = [block.attention.rope for block in ours.blocks]
    try:
        for block in ours.blocks:
            block.attention.rope = RopeFloat32Angles()
        with torch.no_grad():
            logits, weights = ours(prompt_ids, need_weights=True)
            expected = ref(prompt_ids, output_attentions=True)
    finally:
        for block, rope in zip(ours.blocks, ropes):
            block.attention.rope = rope
    assert torch.equal(logits, expected.logits)
    assert torch.equal(weights, torch.stack(expected.attentions))


def test_cached_and_uncached_generation_agree_with_transformers(models, prompt_ids):
    ours, ref, _ = models
    n = 12
    cached = ours.generate(prompt_ids, n)
    uncached = ours.generate(prompt_ids, n, use_cache=False)
    assert cached.shape == (1, 37 + n) and torch.equal(cached, uncached)
    # The reference stops after its end-of-turn token <|im_end|> (id 2); so does ours when told.
    stopped = ours.generate(prompt_ids, n, eos_token_id=2)
    with torch.no_grad():
        expected = ref.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=n, do_sample=False)
    assert torch.equal(stopped, expected) and int(stopped[0, -1]) == 2
    assert torch.equal(stopped, cached[:, : stopped.shape[1]])
    answer = ours.tokenizer.decode(cached[0, 37:].tolist())
    print(f"\nSmolLM2 answers: {answer!r}")
    assert "Paris" in answer


def test_cached_logits_equal_the_full_pass(models, prompt_ids):
    ours, _, _ = models
    caches = ours.new_caches()
    with torch.no_grad():
        full, _ = ours(prompt_ids)
        first, _ = ours(prompt_ids[:, :30], caches=caches)
        steps = [ours(prompt_ids[:, t : t + 1], caches=caches)[0] for t in range(30, 37)]
    assert all(isinstance(c, KVCache) and len(c) == 37 for c in caches)
    assert caches[0].key.shape == (1, 3, 37, 64)
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, rtol=0, atol=1e-4)
