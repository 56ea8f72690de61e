"""Exercises of chapter 6: sinusoidal positions, rotary embeddings (RoPE) and a pre-LN block.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these (the tests write their own
learner-style wrong answers independently).

Shapes: B batch, H heads, L length, D model width, Dh head width.
"""

from __future__ import annotations

import torch
from torch import Tensor

import mhalib

from ._checker import Case, Exercise, Mistake, describe_value

# --- helpers --------------------------------------------------------------------------------


def _case(name: str, names: list[str], *args) -> Case:
    about = ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))
    return Case(name, tuple(args), about)


def _randn(gen: torch.Generator, *shape: int, dtype=torch.float64) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


# --- sinusoidal_positions ------------------------------------------------------------------------

SIN_ARGS = ["L", "D", "base"]


def _sin_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, SIN_ARGS, *a)  # noqa: E731
    return [
        c("L = 3 positions, D = 2", 3, 2, 10000.0),
        c("L = 4, D = 6", 4, 6, 10000.0),
        c("L = 6, D = 4 (L > D)", 6, 4, 10000.0),
        c("L = 5, D = 8, base = 100", 5, 8, 100.0),
        c("L = 16, D = 16", 16, 16, 10000.0),
        c("L = 1, D = 10", 1, 10, 10000.0),
    ]


def _sin_variant(L, D, base=10000.0, *, swap=False, exponent="2i/D", layout="interleaved", start=0, use_base=True):
    b = base if use_base else 10000.0
    p = torch.arange(start, start + L, dtype=torch.float64)[:, None]  # (L, 1)
    i = torch.arange(D // 2, dtype=torch.float64)  # (D/2,)
    if exponent == "2i/D":
        angles = p / b ** (2 * i / D)
    elif exponent == "i/D":
        angles = p / b ** (i / D)
    else:  # "j/D": each feature j uses its own index, so odd features use (2i+1)/D
        j = torch.arange(D, dtype=torch.float64)
        angles_all = p / b ** (j / D)  # (L, D)
        first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
        pe = torch.empty(L, D, dtype=torch.float64)
        pe[:, 0::2] = first(angles_all[:, 0::2])
        pe[:, 1::2] = second(angles_all[:, 1::2])
        return pe.float()
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if layout == "halves":
        pe = torch.cat([first(angles), second(angles)], dim=-1)
    else:
        pe = torch.empty(L, D, dtype=torch.float64)
        pe[:, 0::2] = first(angles)
        pe[:, 1::2] = second(angles)
    if layout == "transposed":
        pe = pe.T
    return pe.float()


SIN_MISTAKES = [
    Mistake(
        "sin_cos_swapped",
        "sine and cosine are swapped: the even features 2i hold sin(p / base**(2i/D)), the odd "
        "features 2i+1 the cosine. Position 0 must give the row [0, 1, 0, 1, ...].",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, swap=True)],
    ),
    Mistake(
        "exponent_i_over_D",
        "you used the exponent i/D with the pair index i = 0 .. D/2-1; it should be 2i/D "
        "(equivalently: the even feature index 2i over D), so that the slowest pair turns at "
        "about 1/base per position.",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, exponent="i/D")],
    ),
    Mistake(
        "exponent_per_feature",
        "the odd feature 2i+1 uses the exponent (2i+1)/D: both features of a pair share one "
        "frequency, base**(-2i/D), so that (sin, cos) is a point on one circle.",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, exponent="j/D")],
    ),
    Mistake(
        "transposed",
        "positions and features are transposed: the table is (L, D), one row per position p and "
        "one column per feature.",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, layout="transposed")],
    ),
    Mistake(
        "halves",
        "you put all the sines in the first D/2 columns and all the cosines in the last D/2; "
        "the formula interleaves them: column 2i is a sine, column 2i+1 the cosine of the same angle.",
        [
            lambda L, D, base=10000.0: _sin_variant(L, D, base, layout="halves"),
            lambda L, D, base=10000.0: _sin_variant(L, D, base, layout="halves", swap=True),
        ],
    ),
    Mistake(
        "base_ignored",
        "you ignored the `base` argument (10000 is only its default).",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, use_base=False)],
    ),
    Mistake(
        "positions_from_one",
        "the positions start at 1; they start at 0 (row 0 is [0, 1, 0, 1, ...]).",
        [lambda L, D, base=10000.0: _sin_variant(L, D, base, start=1)],
    ),
]


def solution_sinusoidal_positions(L: int, D: int, base: float = 10000.0) -> Tensor:
    """PE[p, 2i] = sin(p / base**(2i/D)), PE[p, 2i+1] = cos(p / base**(2i/D)); (L, D) float32."""
    p = torch.arange(L, dtype=torch.float64)[:, None]  # (L, 1): positions as a column
    two_i = torch.arange(0, D, 2, dtype=torch.float64)  # (D/2,): 0, 2, 4, ...
    angles = p / base ** (two_i / D)  # (L, 1) / (D/2,) -> (L, D/2)
    pe = torch.zeros(L, D, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)  # even features: sines
    pe[:, 1::2] = torch.cos(angles)  # odd features: cosines of the same angles
    return pe.float()


SINUSOIDAL_POSITIONS = Exercise(
    id="sinusoidal_positions",
    title="Sinusoidal positions",
    signature="sinusoidal_positions(L, D, base=10000.0) -> pe",
    description="The (L, D) float32 table PE[p, 2i] = sin(p / base**(2i/D)), PE[p, 2i+1] = cos(...).",
    reference=lambda L, D, base=10000.0: mhalib.sinusoidal_positions(L, D, base),
    solution=solution_sinusoidal_positions,
    make_cases=_sin_cases,
    arg_names=SIN_ARGS,
    mistakes=SIN_MISTAKES,
    hints=[
        "Make a column of positions p, shape (L, 1), and a row of even indices 2i = 0, 2, 4, ..., "
        "shape (D/2,); broadcasting p / base ** (2i / D) gives all the angles, (L, D/2).",
        "Fill the even columns pe[:, 0::2] with the sines and the odd columns pe[:, 1::2] with the "
        "cosines of the same angles.",
        "Return float32: compute in float64 if you like and finish with .float().",
    ],
    output_name="pe",
)


# --- apply_rope ------------------------------------------------------------------------------------

ROPE_ARGS = ["x", "positions", "base"]


def _rope_cases(gen: torch.Generator) -> list[Case]:
    c = lambda name, *a: _case(name, ROPE_ARGS, *a)  # noqa: E731
    return [
        c("one pair: L = 3, Dh = 2", _randn(gen, 3, 2), torch.arange(3), 10000.0),
        c("L = 4, Dh = 4, positions 0..3, base = 100", _randn(gen, 4, 4), torch.arange(4), 100.0),
        c("positions 5..8 of a decoder", _randn(gen, 4, 8), torch.arange(5, 9), 10000.0),
        c("heads (B, H, L, Dh) = (2, 3, 5, 8)", _randn(gen, 2, 3, 5, 8), torch.arange(5), 10000.0),
        c("positions not in order", _randn(gen, 1, 2, 4, 6), torch.tensor([7, 2, 0, 30]), 500.0),
        c("float32 input", _randn(gen, 6, 8, dtype=torch.float32), torch.arange(6), 10000.0),
    ]


def _rope_variant(x, positions, base=10000.0, *, pairs="half", sign=1.0, ignore_positions=False,
                  use_base=True, exponent="2i"):
    Dh = x.shape[-1]
    b = base if use_base else 10000.0
    pos = torch.arange(x.shape[-2]) if ignore_positions else positions
    i = torch.arange(Dh // 2, dtype=torch.float64)
    theta = b ** (-(2 * i if exponent == "2i" else i) / Dh)  # (Dh/2,)
    angles = sign * pos.double()[:, None] * theta  # (L, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    if pairs == "half":
        x1, x2 = x[..., : Dh // 2], x[..., Dh // 2:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


ROPE_MISTAKES = [
    Mistake(
        "interleaved",
        "you paired neighbouring features (2i, 2i+1), the paper's convention (and Meta's original "
        "Llama code); this exercise (and Hugging Face's Llama code, with the checkpoints converted "
        "to its format) pairs feature i with feature i + Dh/2, the two halves of the head. Both "
        "are rotations, but weights trained for one give wrong scores with the other.",
        [lambda x, p, base=10000.0: _rope_variant(x, p, base, pairs="interleaved")],
    ),
    Mistake(
        "angle_sign",
        "you rotate by the opposite angle: the pair (x1, x2) becomes (x1 cos - x2 sin, x1 sin + x2 cos), "
        "i.e. x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1).",
        [lambda x, p, base=10000.0: _rope_variant(x, p, base, sign=-1.0)],
    ),
    Mistake(
        "positions_ignored",
        "you used 0, 1, ..., L-1 instead of the `positions` argument; a decoder passes the true "
        "positions of its new tokens, which need not start at 0.",
        [lambda x, p, base=10000.0: _rope_variant(x, p, base, ignore_positions=True)],
    ),
    Mistake(
        "base_ignored",
        "you ignored the `base` argument (10000 is only its default); the frequencies are "
        "base**(-2i/Dh).",
        [lambda x, p, base=10000.0: _rope_variant(x, p, base, use_base=False)],
    ),
    Mistake(
        "exponent_i_over_Dh",
        "the frequencies are off: pair i turns at base**(-2i/Dh) per position, not base**(-i/Dh).",
        [lambda x, p, base=10000.0: _rope_variant(x, p, base, exponent="i")],
    ),
]


def solution_apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate pairs (i, i + Dh/2) of x (..., L, Dh) by positions[m] * base**(-2i/Dh)."""
    half = x.shape[-1] // 2
    i = torch.arange(half, dtype=torch.float64)  # pair index
    theta = base ** (-2 * i / x.shape[-1])  # (Dh/2,) frequencies
    angles = positions.double()[:, None] * theta  # (L, 1) * (Dh/2,) -> (L, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]  # the two halves: pair i is (x1[i], x2[i])
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., L, Dh)


APPLY_ROPE = Exercise(
    id="apply_rope",
    title="Rotary position embedding",
    signature="apply_rope(x, positions, base=10000.0) -> out",
    description="Half-split RoPE: rotate features (i, i + Dh/2) of x (..., L, Dh) by positions[m] * base**(-2i/Dh).",
    reference=lambda x, positions, base=10000.0: mhalib.apply_rope(x, positions, base),
    solution=solution_apply_rope,
    make_cases=_rope_cases,
    arg_names=ROPE_ARGS,
    mistakes=ROPE_MISTAKES,
    hints=[
        "The angles: theta_i = base ** (-2i / Dh) for i = 0 .. Dh/2 - 1, times each position: "
        "positions[:, None] * theta, shape (L, Dh/2).",
        "Split x into halves x1 = x[..., :Dh/2] and x2 = x[..., Dh/2:]; pair i is (x1[..., i], x2[..., i]).",
        "Rotate each pair: (x1 cos - x2 sin, x1 sin + x2 cos), and concatenate the two halves back. "
        "Cast cos and sin to x.dtype.",
    ],
    output_name="out",
)


# --- pre_ln_block ----------------------------------------------------------------------------------

BLOCK_ARGS = ["x", "block"]


def _make_block(seed: int, D: int, H: int, F: int, activation: str) -> mhalib.TransformerBlock:
    # Built under a forked RNG: the notebook's global generator is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = mhalib.TransformerBlock(D, H, F, activation=activation, norm_first=True)
        with torch.no_grad():  # LayerNorms away from (1, 0), different from each other
            for norm in (block.norm1, block.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return block.double().eval()


def _block_case(name: str, x: Tensor, block: mhalib.TransformerBlock) -> Case:
    about = (
        f"x shape {tuple(x.shape)}, {x.dtype}; block = TransformerBlock({block.embed_dim}, "
        f"{block.num_heads}, {block.ffn_dim}, activation={block.activation!r}, norm_first=True)"
    )
    return Case(name, (x, block), about)


def _block_cases(gen: torch.Generator) -> list[Case]:
    return [
        _block_case("one sequence of 3 tokens", _randn(gen, 1, 3, 4) * 2, _make_block(0, 4, 2, 8, "relu")),
        _block_case("a batch", _randn(gen, 2, 5, 8) * 2, _make_block(1, 8, 2, 16, "relu")),
        _block_case("gelu, 4 heads", _randn(gen, 3, 4, 8) * 2, _make_block(2, 8, 4, 32, "gelu")),
    ]


def _attn(block, h):
    return block.attention(h, h, h)[0]


def _block_variant(x, block, how):
    n1, n2, ffn = block.norm1, block.norm2, block.ffn
    if how == "post_ln":
        x = n1(x + _attn(block, x))
        return n2(x + ffn(x))
    if how == "no_attention_residual":
        x = _attn(block, n1(x))
        return x + ffn(n2(x))
    if how == "no_ffn_residual":
        x = x + _attn(block, n1(x))
        return ffn(n2(x))
    if how == "no_residuals":
        return ffn(n2(_attn(block, n1(x))))
    if how == "normalised_residual":
        x = n1(x)
        x = x + _attn(block, x)
        x = n2(x)
        return x + ffn(x)
    if how == "norm1_twice":
        x = x + _attn(block, n1(x))
        return x + ffn(n1(x))
    if how == "final_norm":
        x = x + _attn(block, n1(x))
        return n2(x + ffn(n2(x)))
    raise AssertionError(how)


def _block_mistake(key: str, message: str) -> Mistake:
    return Mistake(key, message, [lambda x, block, _how=key: _block_variant(x, block, _how)])


BLOCK_MISTAKES = [
    _block_mistake(
        "post_ln",
        "this is the post-LN block (LayerNorm after each residual sum, as norm_first=False). Pre-LN "
        "normalises the *input* of each sub-layer and adds its output to the unnormalised x: "
        "x = x + attention(norm1(x)).",
    ),
    _block_mistake(
        "no_attention_residual",
        "the residual around attention is missing: x = x + attention(norm1(x)), not "
        "x = attention(norm1(x)).",
    ),
    _block_mistake(
        "no_ffn_residual",
        "the residual around the MLP is missing: the block returns x + ffn(norm2(x)), not ffn(norm2(x)).",
    ),
    _block_mistake(
        "no_residuals",
        "both residual connections are missing: each sub-layer's output is *added* to its input.",
    ),
    _block_mistake(
        "normalised_residual",
        "you normalised x itself and then added to the normalised x; in pre-LN only the sub-layer "
        "sees norm1(x), the residual path keeps the original x: x = x + attention(norm1(x)).",
    ),
    _block_mistake(
        "norm1_twice",
        "you used norm1 before the MLP as well; the MLP has its own LayerNorm, norm2.",
    ),
    _block_mistake(
        "final_norm",
        "you normalised the block's output; a pre-LN block returns the residual sum unnormalised "
        "(pre-LN models put one final LayerNorm after the whole stack instead).",
    ),
    Mistake(
        "tuple_not_unpacked",
        "block.attention returns a tuple (out, weights): take its first element, "
        "block.attention(h, h, h)[0], or unpack out, _ = block.attention(h, h, h).",
        error_contains="'tuple'",
    ),
]


def solution_pre_ln_block(x: Tensor, block: mhalib.TransformerBlock) -> Tensor:
    """Pre-LN: each sub-layer sees a normalised x; its output is added to x itself."""
    h = block.norm1(x)  # (B, L, D), normalised per token
    attended, _ = block.attention(h, h, h)  # self-attention: q, k, v all from h
    x = x + attended  # residual around attention
    return x + block.ffn(block.norm2(x))  # residual around the MLP


PRE_LN_BLOCK = Exercise(
    id="pre_ln_block",
    title="A pre-LN transformer block",
    signature="pre_ln_block(x, block) -> out",
    description="The pre-LN forward pass with block.attention, block.norm1, block.ffn, block.norm2.",
    reference=lambda x, block: block(x),
    solution=solution_pre_ln_block,
    make_cases=_block_cases,
    arg_names=BLOCK_ARGS,
    mistakes=BLOCK_MISTAKES,
    hints=[
        "Two sub-layers, each: normalise, apply, add. First attention with norm1, then the MLP with norm2.",
        "h = block.norm1(x); x = x + block.attention(h, h, h)[0]",
        "Then return x + block.ffn(block.norm2(x)); there is no LayerNorm on the output.",
    ],
    output_name="out",
)


ALL: list[Exercise] = [SINUSOIDAL_POSITIONS, APPLY_ROPE, PRE_LN_BLOCK]
