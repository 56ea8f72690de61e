"""Chapter 7's exercises: learner-style wrong answers are named, right ones written differently pass.

The wrong answers are written the way learners write them, independently of the checker's
catalogue (``mhalib/exercises/ch07_pretrained_encoder.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mhalib
from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises import ch07_pretrained_encoder as ch07


def check(exercise_id: str, fn) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# --- bert_attention -------------------------------------------------------------------------------


def _load(state_dict, layer, num_heads, D, *, transpose=False, swap=False, biases=True):
    mha = mhalib.MultiHeadAttention(D, num_heads)
    p = f"encoder.layer.{layer}.attention."
    pairs = [(mha.q_proj, "self.query"), (mha.k_proj, "self.key"), (mha.v_proj, "self.value"), (mha.out_proj, "output.dense")]
    if swap:
        pairs[0], pairs[1] = (mha.q_proj, "self.key"), (mha.k_proj, "self.query")
    with torch.no_grad():
        for linear, name in pairs:
            w = state_dict[p + name + ".weight"]
            linear.weight.copy_(w.t() if transpose else w)
            if biases:
                linear.bias.copy_(state_dict[p + name + ".bias"])
    return mha


def ba_transposed(state_dict, layer, num_heads, x, attention_mask):
    # "x @ W, like in the formulas": W stored as (in, out)
    mha = _load(state_dict, layer, num_heads, x.shape[-1], transpose=True)
    return mha(x, x, x, attn_mask=attention_mask.bool()[:, None, None, :])


def ba_swapped(state_dict, layer, num_heads, x, attention_mask):
    mha = _load(state_dict, layer, num_heads, x.shape[-1], swap=True)
    return mha(x, x, x, attn_mask=attention_mask.bool()[:, None, None, :])


def ba_key_padding_style(state_dict, layer, num_heads, x, attention_mask):
    # the nn.MultiheadAttention habit: True marks padding
    mha = _load(state_dict, layer, num_heads, x.shape[-1])
    pad = attention_mask == 0
    return mha(x, x, x, attn_mask=pad[:, None, None, :], need_weights=True)


def ba_no_mask(state_dict, layer, num_heads, x, attention_mask):
    mha = _load(state_dict, layer, num_heads, x.shape[-1])
    return mha(x, x, x)


def ba_weights_only(state_dict, layer, num_heads, x, attention_mask):
    mha = _load(state_dict, layer, num_heads, x.shape[-1], biases=False)
    return mha(x, x, x, attn_mask=attention_mask.bool()[:, None, None, :])


def ba_always_layer_zero(state_dict, layer, num_heads, x, attention_mask):
    mha = _load(state_dict, 0, num_heads, x.shape[-1])
    return mha(x, x, x, attn_mask=attention_mask.bool()[:, None, None, :])


def ba_right_valid_lens(state_dict, layer, num_heads, x, attention_mask):
    # padding sits at the end, so lengths say the same as the mask
    mha = _load(state_dict, layer, num_heads, x.shape[-1])
    return mha(x, x, x, valid_lens=attention_mask.long().sum(-1))


def ba_right_load_state_dict(state_dict, layer, num_heads, x, attention_mask):
    mha = mhalib.MultiHeadAttention(x.shape[-1], num_heads)
    prefix = f"encoder.layer.{layer}.attention."
    rename = {"self.query": "q_proj", "self.key": "k_proj", "self.value": "v_proj", "output.dense": "out_proj"}
    ours = {}
    for theirs, mine in rename.items():
        for param in ("weight", "bias"):
            ours[f"{mine}.{param}"] = state_dict[f"{prefix}{theirs}.{param}"]
    mha.load_state_dict(ours)
    mask = attention_mask.to(torch.bool).unsqueeze(1).unsqueeze(2)
    out, weights = mha(x, x, x, attn_mask=mask)
    return out.detach(), weights.detach()


def ba_right_float_mask(state_dict, layer, num_heads, x, attention_mask):
    mha = _load(state_dict, layer, num_heads, x.shape[-1])
    # a float mask is added to the scores: 0 at real keys, -inf at [PAD]
    bias = torch.zeros(attention_mask.shape).masked_fill(attention_mask == 0, float("-inf"))
    return mha(x, x, x, attn_mask=bias[:, None, None, :])


# --- previous_token_score -------------------------------------------------------------------------


def pt_diagonal(weights, attention_mask):
    L = weights.shape[-1]
    i = torch.arange(1, L)
    on = weights[:, :, i, i]
    m = attention_mask[:, 1:].float()
    return (on * m[:, None]).sum((0, 2)) / m.sum()


def pt_next(weights, attention_mask):
    # key i+1 for query i: "the token after"
    d = torch.diagonal(weights, offset=1, dim1=-2, dim2=-1)  # (B, H, L-1)
    m = attention_mask[:, 1:].float()
    return (d * m[:, None]).sum((0, 2)) / m.sum()


def pt_all_queries(weights, attention_mask):
    d = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)  # (B, H, L-1): query i+1 -> key i
    return d.mean(dim=(0, 2))


def pt_includes_cls(weights, attention_mask):
    d = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)
    m = attention_mask.float()
    return (d * m[:, None, 1:]).sum((0, 2)) / m.sum()  # counts query 0 in the denominator


def pt_mean_of_means(weights, attention_mask):
    scores = []
    for b in range(weights.shape[0]):
        n = int(attention_mask[b].sum())
        i = torch.arange(1, n)
        scores.append(weights[b, :, i, i - 1].mean(-1))
    return torch.stack(scores).mean(0)


def pt_right_diagonal(weights, attention_mask):
    d = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)  # (B, H, L-1)
    real = attention_mask[:, 1:].bool()  # (B, L-1)
    return d.permute(1, 0, 2)[:, real].mean(-1)


def pt_right_loops(weights, attention_mask):
    B, H, L, _ = weights.shape
    total, count = torch.zeros(H), 0
    for b in range(B):
        for i in range(1, int(attention_mask[b].sum())):
            total = total + weights[b, :, i, i - 1]
            count += 1
    return total / count


# --- mean_pool ------------------------------------------------------------------------------------


def mp_mean_everything(hidden, attention_mask):
    return F.normalize(hidden.mean(1), dim=-1)


def mp_forgot_normalise(hidden, attention_mask):
    m = attention_mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def mp_dim0(hidden, attention_mask):
    m = attention_mask.unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1)
    return F.normalize(mean, dim=0)


def mp_cls(hidden, attention_mask):
    return F.normalize(hidden[:, 0, :], dim=-1)


def mp_right_einsum(hidden, attention_mask):
    m = attention_mask.float()
    summed = torch.einsum("bld,bl->bd", hidden, m)
    return summed / summed.norm(dim=1, keepdim=True)  # dividing by the count would change nothing


def mp_right_loop(hidden, attention_mask):
    rows = []
    for h, m in zip(hidden, attention_mask):
        v = h[m.bool()].mean(0)
        rows.append(v / torch.linalg.vector_norm(v))
    return torch.stack(rows)


WRONG = {
    "bert_attention": [
        (ba_transposed, "transposed"),
        (ba_swapped, "query and key are swapped"),
        (ba_key_padding_style, "mask polarity is inverted"),
        (ba_no_mask, "[PAD] tokens are not masked"),
        (ba_weights_only, "biases were not copied"),
        (ba_always_layer_zero, "another layer"),
    ],
    "previous_token_score": [
        (pt_diagonal, "own token"),
        (pt_next, "next token"),
        (pt_all_queries, "padded queries are counted"),
        (pt_includes_cls, "query 0 ([CLS]) is counted"),
        (pt_mean_of_means, "per-sentence means"),
    ],
    "mean_pool": [
        (mp_mean_everything, "[PAD] positions are averaged in"),
        (mp_forgot_normalise, "not normalised"),
        (mp_dim0, "wrong axis"),
        (mp_cls, "[CLS] vector"),
    ],
}
RIGHT = {
    "bert_attention": [ba_right_valid_lens, ba_right_load_state_dict, ba_right_float_mask],
    "previous_token_score": [pt_right_diagonal, pt_right_loops],
    "mean_pool": [mp_right_einsum, mp_right_loop],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG))
def test_reference_and_solution_pass_and_stub_is_not_attempted(exercise_id) -> None:
    exercise = EXERCISES[exercise_id]
    assert exercise in ch07.ALL
    for fn in (exercise.reference, exercise.solution_function):
        result = check(exercise_id, fn)
        assert result.status == "passed", result.message
    assert check(exercise_id, stub).status == "not_attempted"


@pytest.mark.parametrize(
    ("exercise_id", "fn", "phrase"),
    [pytest.param(e, fn, phrase, id=f"{e}-{fn.__name__}") for e, entries in WRONG.items() for fn, phrase in entries],
)
def test_wrong_answer_is_named(exercise_id, fn, phrase) -> None:
    result = check(exercise_id, fn)
    assert result.status == "failed", result.message
    assert "Likely mistake:" in result.message and phrase in result.message, result.message


@pytest.mark.parametrize(
    ("exercise_id", "fn"), [pytest.param(e, fn, id=f"{e}-{fn.__name__}") for e, fns in RIGHT.items() for fn in fns]
)
def test_right_answer_written_differently_passes(exercise_id, fn) -> None:
    result = check(exercise_id, fn)
    assert result.status == "passed", result.message


def test_catalogue_variants_are_recognised_as_themselves() -> None:
    for exercise in ch07.ALL:
        for mistake in exercise.mistakes:
            for variant in mistake.variants:
                assert mistake.key in exercise.check(variant, show=False).mistakes, (exercise.id, mistake.key)


def test_bert_attention_solution_matches_the_loaded_model() -> None:
    """The exercise's solution, on the real checkpoint, gives the loaded model's layer 2 attention."""
    from mhalib.pretrained import minilm

    model = minilm.load_minilm()
    state_dict = minilm.load_state_dict(minilm.model_folder() / "model.safetensors")
    ids, mask = model.tokenize(["Short one.", "A somewhat longer second sentence."])
    x = torch.randn(*ids.shape, 384, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, weights = ch07.solution_bert_attention(state_dict, 2, 12, x, mask)
        ref_out, ref_weights = model.layers[2].attention(x, x, x, attn_mask=mask.bool()[:, None, None, :])
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
