"""Exercises of chapter 7 (a pretrained encoder): loading BERT attention, scoring heads, pooling.

    bert_attention        (state_dict, layer, num_heads, x, attention_mask) -> (out, weights)
    previous_token_score  (weights, attention_mask) -> (H,)
    mean_pool             (hidden, attention_mask) -> (B, D)

The cases use small BERT-shaped state dicts (the checkpoint's names, D = 8 or 12) drawn
from the checker's own generator, so they run in milliseconds and need no model files.

Shapes: B batch, H heads, L query length, S key length, D model width, Dh = D // H.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..modules import MultiHeadAttention
from ._checker import Case, Exercise, Mistake, describe_value

#: Our projection -> BERT's name for it, under ``encoder.layer.{i}.attention.``.
PROJECTIONS = (
    ("q_proj", "self.query"),
    ("k_proj", "self.key"),
    ("v_proj", "self.value"),
    ("out_proj", "output.dense"),
)


# --- small BERT-shaped inputs --------------------------------------------------------------


def _bert_state_dict(gen: torch.Generator, num_layers: int, D: int) -> dict[str, Tensor]:
    """The attention entries of a BERT checkpoint (and the LayerNorm beside them), random."""
    sd = {}
    for i in range(num_layers):
        p = f"encoder.layer.{i}.attention."
        for _, theirs in PROJECTIONS:
            sd[p + theirs + ".weight"] = torch.randn(D, D, generator=gen) / D**0.5
            sd[p + theirs + ".bias"] = torch.randn(D, generator=gen) * 0.5
        sd[p + "output.LayerNorm.weight"] = 1 + 0.1 * torch.randn(D, generator=gen)
        sd[p + "output.LayerNorm.bias"] = 0.1 * torch.randn(D, generator=gen)
    return sd


def _attention_mask(lengths: list[int], L: int, dtype=torch.int64) -> Tensor:
    """1 at the first ``length`` tokens of each row, 0 at [PAD] (the tokenizer's mask)."""
    return (torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]).to(dtype)  # (B, L)


def _masked_weights(gen: torch.Generator, H: int, lengths: list[int], L: int, scale: float = 3.0) -> Tensor:
    """Attention weights (B, H, L, L) of random scores, zero on padded keys."""
    scores = torch.randn(len(lengths), H, L, L, generator=gen) * scale
    keys = _attention_mask(lengths, L).bool()[:, None, None, :]  # (B, 1, 1, S)
    return torch.softmax(scores.masked_fill(~keys, float("-inf")), dim=-1)


# --- bert_attention -------------------------------------------------------------------------

BA_ARGS = ["state_dict", "layer", "num_heads", "x", "attention_mask"]


def _ba_case(gen, name: str, num_layers: int, layer: int, H: int, D: int, lengths: list[int], L: int, mask_dtype=torch.int64) -> Case:
    sd = _bert_state_dict(gen, num_layers, D)
    x = torch.randn(len(lengths), L, D, generator=gen)
    mask = _attention_mask(lengths, L, mask_dtype)
    about = (
        f"state_dict of a {num_layers}-layer BERT with D = {D}, layer = {layer}, num_heads = {H}, "
        f"x {describe_value(x)}, attention_mask = {describe_value(mask)}"
    )
    return Case(name, (sd, layer, H, x, mask), about)


def _ba_cases(gen: torch.Generator) -> list[Case]:
    return [
        _ba_case(gen, "one sentence, no padding", 2, 0, 2, 8, [4], 4),
        _ba_case(gen, "two sentences, the second padded, layer 1", 2, 1, 2, 8, [5, 3], 5),
        _ba_case(gen, "a True/False attention_mask", 2, 1, 2, 8, [2, 4], 4, torch.bool),
        _ba_case(gen, "three heads, D = 12, layer 2", 3, 2, 3, 12, [3, 6, 1], 6),
    ]


def _ba_variant(
    state_dict, layer, num_heads, x, attention_mask, *, transpose=False, swap_qk=False, mask="real", bias=True, layer_used=None
):
    """A MultiHeadAttention loaded from ``state_dict``, with the chosen slips."""
    layer = layer if layer_used is None else layer_used
    p = f"encoder.layer.{layer}.attention."
    mha = MultiHeadAttention(x.shape[-1], num_heads).to(x.dtype)
    names = dict(PROJECTIONS)
    if swap_qk:
        names["q_proj"], names["k_proj"] = names["k_proj"], names["q_proj"]
    with torch.no_grad():
        for ours, theirs in names.items():
            weight = state_dict[p + theirs + ".weight"]
            getattr(mha, ours).weight.copy_(weight.T if transpose else weight)
            if bias:
                getattr(mha, ours).bias.copy_(state_dict[p + theirs + ".bias"])
        allowed = {
            "real": attention_mask.bool(),
            "inverted": ~attention_mask.bool(),
            "none": torch.ones_like(attention_mask, dtype=torch.bool),
        }[mask]
        return mha(x, x, x, attn_mask=allowed[:, None, None, :], need_weights=True)  # (B, L, D), (B, H, L, S)


def _ba_reference(state_dict, layer, num_heads, x, attention_mask):
    return _ba_variant(state_dict, layer, num_heads, x, attention_mask)


def solution_bert_attention(state_dict, layer, num_heads, x, attention_mask):
    """Layer ``layer``'s self-attention of a BERT state dict, run on ``x`` with its [PAD] mask."""
    prefix = f"encoder.layer.{layer}.attention."
    mha = MultiHeadAttention(x.shape[-1], num_heads)
    # BERT's names -> ours; both store weights as nn.Linear does, (out, in): no transpose
    names = {"q_proj": "self.query", "k_proj": "self.key", "v_proj": "self.value", "out_proj": "output.dense"}
    with torch.no_grad():
        for ours, theirs in names.items():
            getattr(mha, ours).weight.copy_(state_dict[prefix + theirs + ".weight"])
            getattr(mha, ours).bias.copy_(state_dict[prefix + theirs + ".bias"])
        # attention_mask is 1 at real tokens; True = may attend, one mask row for every query and head
        keys = attention_mask.bool()[:, None, None, :]  # (B, L) -> (B, 1, 1, S)
        return mha(x, x, x, attn_mask=keys, need_weights=True)


BA_MISTAKES = [
    Mistake(
        "transposed",
        "the weights went in transposed. BERT's checkpoint stores each projection as nn.Linear does, "
        "(out, in), so `state_dict[...].weight` copies into `q_proj.weight` as it is, no `.T`.",
        [lambda *a: _ba_variant(*a, transpose=True), lambda *a: _ba_variant(*a, transpose=True, bias=False)],
    ),
    Mistake(
        "query_key_swapped",
        "query and key are swapped: `self.query` belongs in `q_proj` and `self.key` in `k_proj`. "
        "Swapping them transposes every head's scores (query i meets key j as key i meets query j).",
        [lambda *a: _ba_variant(*a, swap_qk=True)],
    ),
    Mistake(
        "mask_inverted",
        "the mask polarity is inverted: `attention_mask` is 1 at real tokens and mhalib's mask is True "
        "where a query may attend, so pass `attention_mask.bool()`, not `attention_mask == 0` "
        "(that is the convention of nn.MultiheadAttention's key_padding_mask).",
        [lambda *a: _ba_variant(*a, mask="inverted")],
    ),
    Mistake(
        "no_mask",
        "the [PAD] tokens are not masked: real tokens attend to padding. Turn `attention_mask` "
        "(B, L) into a key mask (B, 1, 1, S) and pass it as `attn_mask`.",
        [lambda *a: _ba_variant(*a, mask="none")],
    ),
    Mistake(
        "no_bias",
        "the biases were not copied: every projection of BERT has a bias (`....bias`), and "
        "MultiHeadAttention starts with zero biases.",
        [lambda *a: _ba_variant(*a, bias=False)],
    ),
    Mistake(
        "wrong_layer",
        "the weights come from another layer: build the names with the `layer` argument, "
        "`f\"encoder.layer.{layer}.attention.self.query.weight\"`.",
        [lambda *a: _ba_variant(*a, layer_used=0), lambda *a: _ba_variant(*a, layer_used=1)],
    ),
]

BERT_ATTENTION = Exercise(
    id="bert_attention",
    title="One layer of BERT's attention in mhalib.MultiHeadAttention",
    signature="bert_attention(state_dict, layer, num_heads, x, attention_mask) -> (out, weights)",
    description=(
        "state_dict holds a BERT checkpoint's tensors under their own names "
        "(encoder.layer.{i}.attention.self.query.weight, ...); build a mhalib.MultiHeadAttention "
        "with layer `layer`'s query, key, value and output weights and biases and run self-attention "
        "on x (B, L, D) with need_weights=True, keys where attention_mask (B, L) is 0 masked. "
        "Returns (out (B, L, D), weights (B, H, L, L))."
    ),
    reference=_ba_reference,
    solution=solution_bert_attention,
    make_cases=_ba_cases,
    arg_names=BA_ARGS,
    mistakes=BA_MISTAKES,
    hints=[
        "The four projections are under f\"encoder.layer.{layer}.attention.\": self.query, self.key, "
        "self.value and output.dense, each with .weight and .bias.",
        "Copy each into mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj inside `with torch.no_grad():` "
        "using `.weight.copy_(...)` and `.bias.copy_(...)`; the layouts already agree.",
        "The mask: attention_mask is 1 at real tokens. mhalib wants True where a query may attend, "
        "shaped to broadcast over (B, H, L, S): attention_mask.bool()[:, None, None, :].",
    ],
    output_name="out, weights",
)


# --- previous_token_score --------------------------------------------------------------------

PT_ARGS = ["weights", "attention_mask"]


def _pt_case(name: str, weights: Tensor, mask: Tensor) -> Case:
    about = f"weights {describe_value(weights)}, attention_mask = {describe_value(mask)}"
    return Case(name, (weights, mask), about)


def _previous_head(lengths: list[int], L: int) -> Tensor:
    """One head that puts all of every query's weight on the token before it (query 0 on itself)."""
    w = torch.zeros(len(lengths), 1, L, L)
    for b, n in enumerate(lengths):
        w[b, 0, 0, 0] = 1.0
        for i in range(1, L):
            w[b, 0, i, i - 1 if i < n else 0] = 1.0  # padded queries: somewhere, on a real key
    return w


def _pt_cases(gen: torch.Generator) -> list[Case]:
    return [
        _pt_case("a perfect previous-token head, no padding", _previous_head([4], 4), _attention_mask([4], 4)),
        _pt_case("two heads, one sentence", _masked_weights(gen, 2, [5], 5), _attention_mask([5], 5)),
        _pt_case("three sentences of 6, 3 and 4 tokens", _masked_weights(gen, 3, [6, 3, 4], 6), _attention_mask([6, 3, 4], 6)),
        _pt_case(
            "padding, True/False attention_mask",
            _masked_weights(gen, 4, [7, 2], 7),
            _attention_mask([7, 2], 7, torch.bool),
        ),
    ]


def _pt_variant(weights, attention_mask, *, offset=-1, pads=False, first=False, per_sentence=False):
    """Mean weight of query i on key i + offset, over the chosen queries, per head."""
    B, H, L, _ = weights.shape
    real = attention_mask.bool()  # (B, L)
    queries = torch.arange(L)
    keys = queries + offset
    inside = (keys >= 0) & (keys < L)  # (L,)
    picked = torch.zeros(B, H, L, dtype=weights.dtype)
    picked[:, :, inside] = weights[:, :, queries[inside], keys[inside]]  # (B, H, L)
    counted = torch.ones(B, L, dtype=torch.bool) if pads else real.clone()  # (B, L)
    if not first:
        counted[:, 0] = False  # [CLS] has no token before it
    counted = counted.to(weights.dtype)
    if per_sentence:
        per = (picked * counted[:, None]).sum(-1) / counted.sum(-1, keepdim=True).clamp(min=1)  # (B, H)
        return per.mean(0)
    return (picked * counted[:, None]).sum((0, 2)) / counted.sum()  # (H,)


def _pt_next_shifted(weights, attention_mask):
    """Query i on key i + 1, for i = 0 .. n-2 (the mask of queries 1 .. n-1 reused)."""
    on_next = torch.diagonal(weights, offset=1, dim1=-2, dim2=-1)  # (B, H, L-1): query i -> key i+1
    counted = attention_mask[:, 1:].to(weights.dtype)  # (B, L-1)
    return (on_next * counted[:, None]).sum((0, 2)) / counted.sum()


def _pt_reference(weights, attention_mask):
    return _pt_variant(weights, attention_mask)


def solution_previous_token_score(weights, attention_mask):
    """Per head: the mean weight a real query i >= 1 puts on key i - 1, over all such queries."""
    L = weights.shape[-1]
    i = torch.arange(1, L)
    on_previous = weights[:, :, i, i - 1]  # (B, H, L-1): query i -> key i-1
    counted = attention_mask[:, 1:].to(weights.dtype)  # (B, L-1): real queries from 1 on
    total = (on_previous * counted[:, None, :]).sum(dim=(0, 2))  # (H,)
    return total / counted.sum()  # pooled over every counted query of every sentence


PT_MISTAKES = [
    Mistake(
        "diagonal",
        "this measures the weight on the query's own token (key i), not on the previous one: "
        "take weights[:, :, i, i - 1] for i = 1 .. L-1.",
        [lambda w, m: _pt_variant(w, m, offset=0), lambda w, m: _pt_variant(w, m, offset=0, first=True)],
    ),
    Mistake(
        "next_token",
        "this measures the weight on the next token (key i + 1), not the previous one: query i "
        "is the row and key i - 1 the column, weights[:, :, i, i - 1].",
        [
            lambda w, m: _pt_variant(w, m, offset=1),
            lambda w, m: _pt_variant(w, m, offset=1, first=True),
            _pt_next_shifted,
        ],
    ),
    Mistake(
        "counts_padding",
        "padded queries are counted: average only over real queries (attention_mask 1), "
        "their rows say nothing about the sentence.",
        [lambda w, m: _pt_variant(w, m, pads=True), lambda w, m: _pt_variant(w, m, pads=True, first=True)],
    ),
    Mistake(
        "counts_first",
        "query 0 ([CLS]) is counted: it has no token before it, so leave it out of the mean "
        "(queries i = 1 .. n-1 of a sentence of n tokens).",
        [lambda w, m: _pt_variant(w, m, first=True)],
    ),
    Mistake(
        "mean_of_means",
        "this averages per-sentence means, which weighs a short sentence's queries more; pool every "
        "counted query of every sentence into one mean.",
        [lambda w, m: _pt_variant(w, m, per_sentence=True)],
    ),
]

PREVIOUS_TOKEN_SCORE = Exercise(
    id="previous_token_score",
    title="A previous-token score per head",
    signature="previous_token_score(weights, attention_mask) -> (H,)",
    description=(
        "weights (B, H, L, L) of one layer, attention_mask (B, L) with 1 at real tokens (padding at "
        "the end). For each head, the mean weight that a real query i >= 1 puts on key i - 1, pooled "
        "over all such queries of all sentences. Returns (H,)."
    ),
    reference=_pt_reference,
    solution=solution_previous_token_score,
    make_cases=_pt_cases,
    arg_names=PT_ARGS,
    mistakes=PT_MISTAKES,
    hints=[
        "With i = torch.arange(1, L), weights[:, :, i, i - 1] is (B, H, L-1): each query's weight on "
        "the key just before it.",
        "Keep the real queries only: attention_mask[:, 1:] (B, L-1), as a float to multiply with.",
        "Sum over sentences and queries (dims 0 and 2) and divide by the number of counted queries.",
    ],
    output_name="score",
)


# --- mean_pool --------------------------------------------------------------------------------

MP_ARGS = ["hidden", "attention_mask"]


def _mp_case(gen, name: str, lengths: list[int], L: int, D: int, mask_dtype=torch.int64) -> Case:
    hidden = torch.randn(len(lengths), L, D, generator=gen) + 0.5
    mask = _attention_mask(lengths, L, mask_dtype)
    about = f"hidden {describe_value(hidden)}, attention_mask = {describe_value(mask)}"
    return Case(name, (hidden, mask), about)


def _mp_cases(gen: torch.Generator) -> list[Case]:
    return [
        _mp_case(gen, "one sentence, no padding", [3], 3, 4),
        _mp_case(gen, "two sentences, the second padded", [4, 2], 4, 6),
        _mp_case(gen, "three sentences, True/False mask", [5, 1, 3], 5, 8, torch.bool),
    ]


def _mp_variant(hidden, attention_mask, *, pads=False, normalise=True, norm_dim=-1, cls=False):
    if cls:
        pooled = hidden[:, 0]
    else:
        real = torch.ones_like(attention_mask, dtype=hidden.dtype) if pads else attention_mask.to(hidden.dtype)
        real = real[:, :, None]  # (B, L, 1)
        pooled = (hidden * real).sum(1) / real.sum(1)  # (B, D)
    return F.normalize(pooled, p=2, dim=norm_dim) if normalise else pooled


def _mp_reference(hidden, attention_mask):
    return _mp_variant(hidden, attention_mask)


def solution_mean_pool(hidden, attention_mask):
    """Mean of each sentence's real-token vectors, scaled to length 1 (sentence-transformers)."""
    real = attention_mask.to(hidden.dtype)[:, :, None]  # (B, L) -> (B, L, 1)
    mean = (hidden * real).sum(dim=1) / real.sum(dim=1)  # (B, D): [PAD] rows add nothing
    return mean / mean.norm(dim=-1, keepdim=True)  # each row of length 1


MP_MISTAKES = [
    Mistake(
        "counts_padding",
        "the [PAD] positions are averaged in: their hidden states are not zero, so multiply by the "
        "mask (B, L, 1) before summing and divide by the number of real tokens.",
        [lambda h, m: _mp_variant(h, m, pads=True)],
    ),
    Mistake(
        "not_normalised",
        "the mean is not normalised: divide each row by its L2 norm (F.normalize(x, dim=-1)), "
        "so that a dot product of two embeddings is their cosine.",
        [lambda h, m: _mp_variant(h, m, normalise=False), lambda h, m: _mp_variant(h, m, pads=True, normalise=False)],
    ),
    Mistake(
        "normalised_over_batch",
        "the normalisation runs over the wrong axis: each sentence's (D,) vector must have norm 1, "
        "so normalise along the last axis (dim=-1), not over the batch (dim=0).",
        [lambda h, m: _mp_variant(h, m, norm_dim=0)],
    ),
    Mistake(
        "cls_pooling",
        "this takes the [CLS] vector (position 0); all-MiniLM-L6-v2 was trained with the mean over "
        "all real tokens, [CLS] and [SEP] included.",
        [lambda h, m: _mp_variant(h, m, cls=True), lambda h, m: _mp_variant(h, m, cls=True, normalise=False)],
    ),
]

MEAN_POOL = Exercise(
    id="mean_pool",
    title="Sentence embeddings: mean pooling over real tokens",
    signature="mean_pool(hidden, attention_mask) -> (B, D)",
    description=(
        "hidden (B, L, D) from the encoder's last layer, attention_mask (B, L) with 1 at real tokens. "
        "Average each sentence's real-token vectors and scale the mean to L2 norm 1. Returns (B, D)."
    ),
    reference=_mp_reference,
    solution=solution_mean_pool,
    make_cases=_mp_cases,
    arg_names=MP_ARGS,
    mistakes=MP_MISTAKES,
    hints=[
        "Turn the mask into (B, L, 1) floats, multiply, sum over the tokens (dim=1), divide by the count.",
        "Then divide each row by its norm: mean / mean.norm(dim=-1, keepdim=True).",
    ],
    output_name="embeddings",
)


ALL = [BERT_ATTENTION, PREVIOUS_TOKEN_SCORE, MEAN_POOL]
