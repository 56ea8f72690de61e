"""Chapter 6's exercises: learner-style wrong answers get their named mistake, right ones pass.

The answers below are written the way learners write them, independently of the
checker's catalogue (``mhalib/exercises/ch06_positions.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

import mhalib
from mhalib.exercises import EXERCISES, CheckResult
from mhalib.exercises.ch06_positions import ALL


def check(exercise_id: str, fn) -> CheckResult:
    return EXERCISES[exercise_id].check(fn, show=False)


def stub(*args):
    raise NotImplementedError("replace this line with your code")


# --- sinusoidal_positions ---------------------------------------------------------------------


def sin_swapped(L, D, base=10000.0):
    pe = torch.zeros(L, D)
    for p in range(L):
        for i in range(D // 2):
            pe[p, 2 * i] = math.cos(p / base ** (2 * i / D))
            pe[p, 2 * i + 1] = math.sin(p / base ** (2 * i / D))
    return pe


def sin_i_over_d(L, D, base=10000.0):
    pos = torch.arange(L).unsqueeze(1).float()
    div = base ** (torch.arange(D // 2).float() / D)
    pe = torch.zeros(L, D)
    pe[:, 0::2] = torch.sin(pos / div)
    pe[:, 1::2] = torch.cos(pos / div)
    return pe


def sin_exponent_per_column(L, D, base=10000.0):
    pe = torch.zeros(L, D)
    for p in range(L):
        for j in range(D):
            angle = p / base ** (j / D)
            pe[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


def sin_transposed(L, D, base=10000.0):
    dims = torch.arange(0, D, 2).float()[:, None]  # (D/2, 1)
    angles = torch.arange(L).float()[None, :] / base ** (dims / D)  # (D/2, L)
    pe = torch.zeros(D, L)
    pe[0::2] = torch.sin(angles)
    pe[1::2] = torch.cos(angles)
    return pe


def sin_concatenated(L, D, base=10000.0):
    angles = torch.arange(L)[:, None] * torch.exp(-math.log(base) * torch.arange(0, D, 2) / D)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).float()


def sin_hardcoded_base(L, D, base=10000.0):
    angles = torch.arange(L)[:, None] / 10000 ** (torch.arange(0, D, 2) / D)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(L, D).float()


def sin_from_one(L, D, base=10000.0):
    angles = torch.arange(1, L + 1)[:, None] / base ** (torch.arange(0, D, 2) / D)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(L, D).float()


def sin_right_exp_log(L, D, base=10000.0):
    position = torch.arange(L, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, D, 2, dtype=torch.float32) * (-math.log(base) / D))
    pe = torch.zeros(L, D)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def sin_right_loops(L, D, base=10000.0):
    rows = []
    for p in range(L):
        row = []
        for i in range(D // 2):
            angle = p / base ** (2 * i / D)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(L, D)


# --- apply_rope --------------------------------------------------------------------------------


def _halves(x):
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def _angles(positions, Dh, base):
    inv_freq = 1.0 / base ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)
    return torch.outer(positions.double(), inv_freq)  # (L, Dh/2)


def rope_interleaved(x, positions, base=10000.0):
    a = _angles(positions, x.shape[-1], base)
    cos, sin = a.cos().to(x.dtype), a.sin().to(x.dtype)
    even, odd = x[..., ::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., ::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _rotate_half(x):
    x1, x2 = _halves(x)
    return torch.cat((-x2, x1), dim=-1)


def rope_minus_sign(x, positions, base=10000.0):
    emb = torch.cat([_angles(positions, x.shape[-1], base)] * 2, dim=-1)
    return x * emb.cos().to(x.dtype) - _rotate_half(x) * emb.sin().to(x.dtype)


def rope_arange(x, positions, base=10000.0):
    L = x.shape[-2]
    emb = torch.cat([_angles(torch.arange(L), x.shape[-1], base)] * 2, dim=-1)
    return x * emb.cos().to(x.dtype) + _rotate_half(x) * emb.sin().to(x.dtype)


def rope_default_base(x, positions, base=10000.0):
    emb = torch.cat([_angles(positions, x.shape[-1], 10000.0)] * 2, dim=-1)
    return x * emb.cos().to(x.dtype) + _rotate_half(x) * emb.sin().to(x.dtype)


def rope_i_over_dh(x, positions, base=10000.0):
    Dh = x.shape[-1]
    inv_freq = base ** (-torch.arange(Dh // 2, dtype=torch.float64) / Dh)
    emb = torch.cat([torch.outer(positions.double(), inv_freq)] * 2, dim=-1)
    return x * emb.cos().to(x.dtype) + _rotate_half(x) * emb.sin().to(x.dtype)


def rope_right_rotate_half(x, positions, base=10000.0):
    emb = torch.cat([_angles(positions, x.shape[-1], base)] * 2, dim=-1)
    return x * emb.cos().to(x.dtype) + _rotate_half(x) * emb.sin().to(x.dtype)


def rope_right_complex(x, positions, base=10000.0):
    x1, x2 = _halves(x.double())
    z = torch.complex(x1, x2) * torch.polar(torch.ones(1, dtype=torch.float64), _angles(positions, x.shape[-1], base))
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


# --- pre_ln_block ----------------------------------------------------------------------------------


def block_post_ln(x, block):
    x = block.norm1(x + block.attention(x, x, x)[0])
    return block.norm2(x + block.ffn(x))


def block_forgot_attention_residual(x, block):
    h = block.norm1(x)
    x, _ = block.attention(h, h, h)
    return x + block.ffn(block.norm2(x))


def block_forgot_ffn_residual(x, block):
    h = block.norm1(x)
    x = x + block.attention(h, h, h)[0]
    return block.ffn(block.norm2(x))


def block_no_residuals(x, block):
    h = block.norm1(x)
    h, _ = block.attention(h, h, h)
    return block.ffn(block.norm2(h))


def block_overwrote_x(x, block):
    x = block.norm1(x)
    x = x + block.attention(x, x, x)[0]
    x = block.norm2(x)
    return x + block.ffn(x)


def block_same_norm(x, block):
    h = block.norm1(x)
    x = x + block.attention(h, h, h)[0]
    return x + block.ffn(block.norm1(x))


def block_normalised_output(x, block):
    h = block.norm1(x)
    x = x + block.attention(h, h, h)[0]
    return block.norm2(x + block.ffn(block.norm2(x)))


def block_tuple(x, block):
    h = block.norm1(x)
    x = x + block.attention(h, h, h)
    return x + block.ffn(block.norm2(x))


def block_right_unpacked(x, block):
    normed = block.norm1(x)
    attended, weights = block.attention(normed, normed, normed)
    y = x + attended
    return y + block.ffn(block.norm2(y))


def block_right_by_hand_ffn(x, block):
    h = block.norm1(x)
    x = x + block.attention(query=h, key=h, value=h, need_weights=False)[0]
    f = block.ffn
    act = torch.relu if block.activation == "relu" else torch.nn.functional.gelu
    return x + f.linear2(act(f.linear1(block.norm2(x))))


WRONG = {
    "sinusoidal_positions": [
        (sin_swapped, "sine and cosine are swapped", "failed"),
        (sin_i_over_d, "you used the exponent i/D", "failed"),
        (sin_exponent_per_column, "the odd feature 2i+1 uses the exponent", "failed"),
        (sin_transposed, "positions and features are transposed", "failed"),
        (sin_concatenated, "all the sines in the first D/2 columns", "failed"),
        (sin_hardcoded_base, "you ignored the `base` argument", "failed"),
        (sin_from_one, "the positions start at 1", "failed"),
    ],
    "apply_rope": [
        (rope_interleaved, "pairs feature i with feature i + Dh/2", "failed"),
        (rope_minus_sign, "you rotate by the opposite angle", "failed"),
        (rope_arange, "instead of the `positions` argument", "failed"),
        (rope_default_base, "you ignored the `base` argument", "failed"),
        (rope_i_over_dh, "the frequencies are off", "failed"),
    ],
    "pre_ln_block": [
        (block_post_ln, "this is the post-LN block", "failed"),
        (block_forgot_attention_residual, "the residual around attention is missing", "failed"),
        (block_forgot_ffn_residual, "the residual around the MLP is missing", "failed"),
        (block_no_residuals, "both residual connections are missing", "failed"),
        (block_overwrote_x, "you normalised x itself", "failed"),
        (block_same_norm, "you used norm1 before the MLP as well", "failed"),
        (block_normalised_output, "you normalised the block's output", "failed"),
        (block_tuple, "block.attention returns a tuple", "error"),
    ],
}

RIGHT = {
    "sinusoidal_positions": [sin_right_exp_log, sin_right_loops],
    "apply_rope": [rope_right_rotate_half, rope_right_complex],
    "pre_ln_block": [block_right_unpacked, block_right_by_hand_ffn],
}

IDS = {exercise.id for exercise in ALL}


def test_the_chapter_6_exercises_are_registered_and_all_tested():
    assert IDS == {"sinusoidal_positions", "apply_rope", "pre_ln_block"}
    assert IDS <= set(EXERCISES) and set(WRONG) == IDS == set(RIGHT)
    for exercise_id in IDS:
        assert len(WRONG[exercise_id]) >= 5


@pytest.mark.parametrize("exercise_id", sorted(IDS))
def test_reference_and_solution_pass_and_stub_is_not_attempted(exercise_id):
    exercise = EXERCISES[exercise_id]
    for fn in (exercise.reference, exercise.solution_function):
        result = check(exercise_id, fn)
        assert result.status == "passed", result.message
    result = check(exercise_id, stub)
    assert result.status == "not_attempted" and "not attempted" in result.message


@pytest.mark.parametrize(
    "exercise_id, fn, phrase, status",
    [pytest.param(e, fn, phrase, status, id=f"{e}-{fn.__name__}") for e, rows in WRONG.items() for fn, phrase, status in rows],
)
def test_wrong_answer_gets_its_named_mistake(exercise_id, fn, phrase, status):
    result = check(exercise_id, fn)
    assert result.status == status, result.message
    assert "Likely mistake" in result.message, result.message
    assert phrase in result.message, result.message


@pytest.mark.parametrize(
    "exercise_id, fn", [pytest.param(e, fn, id=f"{e}-{fn.__name__}") for e, fns in RIGHT.items() for fn in fns]
)
def test_right_answer_written_differently_passes(exercise_id, fn):
    result = check(exercise_id, fn)
    assert result.status == "passed", result.message


def test_block_check_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    check("pre_ln_block", block_post_ln)
    assert torch.equal(torch.get_rng_state(), state)


def test_float64_table_is_a_dtype_error_with_advice():
    result = check("sinusoidal_positions", lambda L, D, base=10000.0: mhalib.sinusoidal_positions(L, D, base).double())
    assert result.status == "failed" and "dtype torch.float32" in result.message
