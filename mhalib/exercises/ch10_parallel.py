"""Exercises of chapter 10: cut a layer's weights for one rank, and combine the ranks' outputs.

Both run in one process: the learner's function gets plain tensors (the weights of the
whole layer, or the list of every rank's partial output) and no process group.

Each mistake is a small function computing what a learner who made that slip would get;
the checker compares the learner's answer with these (the tests write their own
learner-style wrong answers independently).

Shapes: B batch, H heads, L length, D model width, Dh = D // H, P = world_size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checker import Case, Exercise, Mistake, describe_value

# --- helpers --------------------------------------------------------------------------------


def _case(name: str, names: list[str], *args) -> Case:
    about = ", ".join(f"{n} = {describe_value(a)}" for n, a in zip(names, args))
    return Case(name, tuple(args), about)


def _randn(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


# --- shard_weights --------------------------------------------------------------------------

SHARD_ARGS = ["W_q", "W_k", "W_v", "W_o", "b_o", "num_heads", "rank", "world_size"]


def _shard_cases(gen: torch.Generator) -> list[Case]:
    def c(name: str, D: int, H: int, rank: int, P: int) -> Case:
        weights = [_randn(gen, D, D) for _ in range(4)]
        return _case(name, SHARD_ARGS, *weights, _randn(gen, D), H, rank, P)

    return [
        c("D = 4, H = 2 heads, rank 0 of 2", 4, 2, 0, 2),
        c("D = 4, H = 2 heads, rank 1 of 2", 4, 2, 1, 2),
        c("D = 8, H = 4 heads, rank 1 of 2 (two heads each)", 8, 4, 1, 2),
        c("D = 12, H = 6 heads, rank 2 of 3", 12, 6, 2, 3),
        c("D = 8, H = 4 heads, rank 3 of 4", 8, 4, 3, 4),
        c("D = 6, H = 3 heads, rank 0 of 1 (one process owns everything)", 6, 3, 0, 1),
    ]


def _rows(D: int, H: int, rank: int, P: int) -> slice:
    width = D // P  # H/P whole heads of Dh = D/H features each
    return slice(rank * width, (rank + 1) * width)


def _inside_heads(D: int, H: int, rank: int, P: int) -> Tensor:
    """Feature indices of the rank-th piece of *every* head: each head cut in P."""
    Dh = D // H
    piece = max(Dh // P, 1)
    return torch.cat([torch.arange(h * Dh + rank * piece, h * Dh + (rank + 1) * piece) for h in range(H)])


def _shard_variant(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size, *, cut="rows", bias="rank0"):
    D = W_q.shape[0]
    if cut == "rows":
        rows = _rows(D, num_heads, rank, world_size)
        qkv = [W[rows] for W in (W_q, W_k, W_v)]
        out = W_o[:, rows]
    elif cut == "swapped":  # q, k, v by columns, out_proj by rows
        rows = _rows(D, num_heads, rank, world_size)
        qkv = [W[:, rows] for W in (W_q, W_k, W_v)]
        out = W_o[rows]
    elif cut == "strided":  # every P-th feature: heads cut inside
        qkv = [W[rank::world_size] for W in (W_q, W_k, W_v)]
        out = W_o[:, rank::world_size]
    else:  # "inside": the rank-th piece of every head
        idx = _inside_heads(D, num_heads, rank, world_size)
        qkv = [W[idx] for W in (W_q, W_k, W_v)]
        out = W_o[:, idx]
    if bias == "rank0":
        b = b_o.clone() if rank == 0 else torch.zeros_like(b_o)
    elif bias == "every":
        b = b_o.clone()
    elif bias == "divided":
        b = b_o / world_size
    else:  # "last": on the last rank instead of rank 0
        b = b_o.clone() if rank == world_size - 1 else torch.zeros_like(b_o)
    return (*qkv, out, b)


SHARD_MISTAKES = [
    Mistake(
        "rows_columns_swapped",
        "rows and columns are swapped. In nn.Linear layout (out_features, in_features) a head "
        "owns *output* features of W_q, W_k, W_v, so rank r takes their rows "
        "W[r*D/P:(r+1)*D/P]; it owns *input* features of W_o, so it takes W_o's columns.",
        [lambda *a: _shard_variant(*a, cut="swapped"), lambda *a: _shard_variant(*a, cut="swapped", bias="every")],
    ),
    Mistake(
        "heads_cut_inside",
        "you cut inside the heads: every rank got a piece of every head, so no rank can "
        "compute a head's query-key dot products (they need all Dh features of the head). "
        "Rank r must own H/P whole heads: the contiguous features r*D/P .. (r+1)*D/P - 1.",
        [lambda *a, _c=c, _b=b: _shard_variant(*a, cut=_c, bias=_b)
         for c in ("strided", "inside") for b in ("rank0", "every")],
    ),
    Mistake(
        "bias_on_every_rank",
        "every rank adds out_proj's bias, so the all-reduce adds it P times. Give it to rank 0 "
        "and return zeros on the other ranks.",
        [lambda *a: _shard_variant(*a, bias="every")],
    ),
    Mistake(
        "bias_divided",
        "you divided the bias by P on every rank: the sum is right (up to rounding), but this "
        "exercise keeps the bias whole on rank 0 (exact, and one parameter gets its gradient); "
        "return zeros on the other ranks.",
        [lambda *a: _shard_variant(*a, bias="divided")],
    ),
    Mistake(
        "bias_on_last_rank",
        "the bias is on the last rank; this exercise (like mhalib.parallel) puts it on rank 0.",
        [lambda *a: _shard_variant(*a, bias="last")],
    ),
]


def solution_shard_weights(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size):
    """Rank r's rows of W_q, W_k, W_v, its columns of W_o, the bias on rank 0 (zeros elsewhere)."""
    D = W_q.shape[0]
    width = D // world_size  # (H / P) heads * (D / H) features each
    mine = slice(rank * width, (rank + 1) * width)  # this rank's whole heads
    b = b_o.clone() if rank == 0 else torch.zeros_like(b_o)
    return W_q[mine], W_k[mine], W_v[mine], W_o[:, mine], b  # (D/P, D) x 3, (D, D/P), (D,)


SHARD_WEIGHTS = Exercise(
    id="shard_weights",
    title="Cut one layer's weights for rank r",
    signature="shard_weights(W_q, W_k, W_v, W_o, b_o, num_heads, rank, world_size) -> (W_q_r, W_k_r, W_v_r, W_o_r, b_o_r)",
    description="Rank r's share of an attention layer whose weights are in nn.Linear layout (out, in).",
    reference=lambda *a: _shard_variant(*a),
    solution=solution_shard_weights,
    make_cases=_shard_cases,
    arg_names=SHARD_ARGS,
    mistakes=SHARD_MISTAKES,
    hints=[
        "Rank r owns heads r*H/P .. (r+1)*H/P - 1, that is the D/P features starting at "
        "r*D/P (heads lie side by side, Dh features each, as in chapter 3).",
        "nn.Linear stores (out_features, in_features): the features a head produces in W_q, "
        "W_k, W_v are rows; the features W_o reads from the heads are columns.",
        "If every rank added the bias, the sum over ranks would add it P times: keep it on rank 0, "
        "return torch.zeros_like(b_o) on the others.",
    ],
    output_name="W_q_r, W_k_r, W_v_r, W_o_r, b_o_r",
)


# --- combine_partials ---------------------------------------------------------------------------

COMBINE_ARGS = ["partials"]


def _combine_cases(gen: torch.Generator) -> list[Case]:
    def c(name: str, P: int, B: int, L: int, D: int) -> Case:
        return _case(name, COMBINE_ARGS, [_randn(gen, B, L, D) for _ in range(P)])

    return [
        c("P = 2 partial outputs (1, 2, 3)", 2, 1, 2, 3),
        c("P = 2, (2, 3, 4)", 2, 2, 3, 4),
        c("P = 4, (2, 3, 8)", 4, 2, 3, 8),
        c("P = 3, (1, 5, 6)", 3, 1, 5, 6),
        c("P = 1 (one process)", 1, 2, 2, 4),
    ]


COMBINE_MISTAKES = [
    Mistake(
        "concatenated",
        "you concatenated the partial outputs. Each is already a full-width (B, L, D) output of "
        "W_o for that rank's heads, W_o[:, heads_r] @ heads_r; the layer's output is their sum "
        "(what an all-reduce computes), not a wider tensor.",
        [lambda p, _d=d: torch.cat(list(p), dim=_d) for d in (-1, 0, 1)]
        + [lambda p: torch.stack(list(p))],
    ),
    Mistake(
        "averaged",
        "you averaged the partial outputs: W_o's product is a sum over all heads' features, so "
        "add them (an all-reduce with op=SUM, not AVG).",
        [lambda p: torch.stack(list(p)).mean(0)],
    ),
    Mistake(
        "missing_all_reduce",
        "you returned one rank's partial output alone: without the all-reduce each rank has only "
        "its own heads' share of the output. Sum all P of them.",
        [lambda p: p[0].clone(), lambda p: p[-1].clone()],
    ),
]


def solution_combine_partials(partials):
    """The sum of the P partial (B, L, D) outputs: what one all-reduce gives every rank."""
    return torch.stack(list(partials)).sum(dim=0)  # P x (B, L, D) -> (P, B, L, D) -> (B, L, D)


COMBINE_PARTIALS = Exercise(
    id="combine_partials",
    title="Combine the ranks' partial outputs",
    signature="combine_partials(partials) -> out",
    description="The layer's (B, L, D) output from the list of every rank's partial output.",
    reference=solution_combine_partials,
    solution=solution_combine_partials,
    make_cases=_combine_cases,
    arg_names=COMBINE_ARGS,
    mistakes=COMBINE_MISTAKES,
    hints=[
        "Each rank multiplied its heads by its columns of W_o: a (B, L, D) tensor, full width.",
        "W_o @ concat(heads) = sum over ranks of W_o[:, heads_r] @ heads_r.",
        "torch.stack(partials).sum(dim=0), or a running sum.",
    ],
    output_name="out",
)


ALL: list[Exercise] = [SHARD_WEIGHTS, COMBINE_PARTIALS]
