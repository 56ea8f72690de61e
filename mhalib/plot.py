"""Figures of attention: heatmaps of weights, one head or a grid of heads.

The only module of ``mhalib`` that imports matplotlib. Every function draws into axes it
is given (or makes its own figure) and returns the figure, so a notebook cell can show it.

Shapes:
    weights (L, S) for one head, (H, L, S) for a grid of heads; rows are queries, columns keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "attention_heatmap",
    "attention_heads",
    "head_colors",
    "head_scores_layout",
    "merge_heads_layout",
    "split_heads_layout",
]

CMAP = "viridis"


def _as_matrix(name: str, weights: Tensor, ndim: int) -> Tensor:
    if not isinstance(weights, Tensor):
        weights = torch.as_tensor(weights)
    if weights.dim() != ndim:
        expected = "(L, S)" if ndim == 2 else "(H, L, S)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(weights.shape)}")
    return weights.detach().to("cpu", torch.float32)


def _check_labels(name: str, labels: Sequence[str] | None, n: int) -> None:
    if labels is not None and len(labels) != n:
        raise ValueError(f"{name} must have {n} labels, one per row/column, got {len(labels)}")


def attention_heatmap(
    weights: Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool | None = None,
    vmax: float | None = 1.0,
    colorbar: bool = True,
) -> Figure:
    """Heatmap of one head's weights: row i is query i, column j is key j.

    ``annotate`` writes each weight into its cell (default: when the matrix is at most 8 x 8).
    ``vmax=None`` scales the colours to the data instead of to [0, 1].

    Shapes:
        weights (L, S); query_labels L strings; key_labels S strings.
    """
    weights = _as_matrix("weights", weights, 2)
    L, S = weights.shape
    _check_labels("query_labels", query_labels, L)
    _check_labels("key_labels", key_labels, S)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.65 * S + 2.2, 0.5 * L + 1.3), layout="constrained")
    fig = ax.figure
    image = ax.imshow(weights.numpy(), cmap=CMAP, vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(S), key_labels if key_labels is not None else range(S))
    ax.set_yticks(range(L), query_labels if query_labels is not None else range(L))
    if key_labels is not None and max(len(str(t)) for t in key_labels) > 3:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate is None:
        annotate = L <= 8 and S <= 8
    if annotate:
        top = float(weights.max()) if vmax is None else vmax
        for i in range(L):
            for j in range(S):
                w = float(weights[i, j])
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=10,
                        color="black" if w > 0.6 * top else "white")
    if colorbar:
        fig.colorbar(image, ax=ax, label="weight", shrink=0.8)
    return fig


def attention_heads(
    weights: Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    annotate: bool = False,
) -> Figure:
    """A grid of heatmaps, one per head, sharing one colour scale from 0 to 1.

    Shapes:
        weights (H, L, S); titles H strings (default "head 0", "head 1", ...).
    """
    weights = _as_matrix("weights", weights, 3)
    H, L, S = weights.shape
    _check_labels("titles", titles, H)
    ncols = min(H, 4) if ncols is None else ncols
    nrows = -(-H // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * (0.4 * S + 1.6) + 1.0, nrows * (0.38 * L + 1.3)),
        squeeze=False, layout="constrained",
    )
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        attention_heatmap(
            weights[h], query_labels, key_labels, ax=ax,
            title=titles[h] if titles is not None else f"head {h}", annotate=annotate, colorbar=False,
        )
        if h % ncols:
            ax.set_ylabel("")
        if h < H - ncols:
            ax.set_xlabel("")
    fig.colorbar(axes.flat[0].images[0], ax=axes, label="weight", shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --- tensor-layout diagrams: colour = head, number in a cell = token position -------------
#
# Each diagram is computed, not drawn by hand: a tensor whose every entry encodes where it
# came from (sequence b, token l, feature d) goes through the real ``mhalib`` function, and
# the cells are coloured and numbered from the codes that come out. If a layout function
# mixed tokens across heads, the diagram would show it.

HEAD_PALETTE = "Set2"  # qualitative, light enough for black text in the cells
_CELL_INCH = 0.3  # side of one cell in the figure, in inches
_GAP = 0.7  # space between blocks, in cells


def head_colors(num_heads: int) -> list[tuple[float, float, float, float]]:
    """One colour per head from a qualitative palette (repeats after 8 heads)."""
    cmap = plt.get_cmap(HEAD_PALETTE)
    return [cmap(h % cmap.N) for h in range(num_heads)]


def _check_layout_sizes(batch: int, seq_len: int, embed_dim: int, num_heads: int) -> int:
    for name, n in (("batch", batch), ("seq_len", seq_len), ("embed_dim", embed_dim), ("num_heads", num_heads)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    return embed_dim // num_heads


def _codes(batch: int, seq_len: int, embed_dim: int) -> Tensor:
    """(B, L, D) float64 tensor whose entry [b, l, d] is the integer (b*L + l)*D + d."""
    return torch.arange(batch * seq_len * embed_dim, dtype=torch.float64).reshape(batch, seq_len, embed_dim)


def _decode(codes: Tensor, seq_len: int, embed_dim: int, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sequence, token and head of origin of every entry of a tensor of codes."""
    codes = codes.round().long()
    feature = codes % embed_dim
    token = (codes // embed_dim) % seq_len
    seq = codes // (embed_dim * seq_len)
    return seq, token, feature // head_dim


def _draw_block(
    ax: Axes,
    x0: float,
    y0: float,
    token: Tensor,
    head: Tensor,
    colors: Sequence,
    prefix: str = "",
    label: str | None = None,
    label_side: str = "left",
    fontsize: float = 9,
) -> None:
    """Draw a (rows, cols) grid of square cells with its top-left corner at (x0, y0).

    Cell [i, j] is filled with the colour of head[i, j] and shows prefix + token[i, j].
    """
    from matplotlib.patches import Rectangle

    rows, cols = token.shape
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(Rectangle((x0 + j, y0 + i), 1, 1, facecolor=colors[int(head[i, j])],
                                   edgecolor="white", linewidth=1.2))
            ax.text(x0 + j + 0.5, y0 + i + 0.5, f"{prefix}{int(token[i, j])}", ha="center", va="center",
                    fontsize=fontsize, color="black")
    ax.add_patch(Rectangle((x0, y0), cols, rows, fill=False, edgecolor="#444444", linewidth=0.8))
    if label:
        if label_side == "left":
            ax.text(x0 - 0.3, y0 + rows / 2, label, ha="right", va="center", fontsize=9)
        else:
            ax.text(x0 + cols + 0.3, y0 + rows / 2, label, ha="left", va="center", fontsize=9)


def _arrow(ax: Axes, x_from: float, x_to: float, y: float, text: str) -> None:
    ax.annotate("", xy=(x_to, y), xytext=(x_from, y),
                arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.5, "mutation_scale": 14})
    ax.text((x_from + x_to) / 2, y - 0.4, text, ha="center", va="bottom", fontsize=8.5, family="monospace",
            linespacing=1.3)


def _head_brackets(ax: Axes, x0: float, y: float, num_heads: int, head_dim: int, colors: Sequence) -> None:
    """'head h' above each group of head_dim feature columns."""
    for h in range(num_heads):
        left, right = x0 + h * head_dim + 0.1, x0 + (h + 1) * head_dim - 0.1
        ax.plot([left, right], [y, y], color=colors[h], lw=4, solid_capstyle="butt")
        ax.text((left + right) / 2, y - 0.25, f"head {h}", ha="center", va="bottom", fontsize=9)


def _draw_sequences(
    ax: Axes, x0: float, y0: float, token: Tensor, head: Tensor, colors: Sequence, num_heads: int, caption: str,
    label_side: str,
) -> None:
    """The (B, L, D) side of a diagram: 'head h' brackets, one grid per sequence, a caption below."""
    B, L, D = token.shape
    _head_brackets(ax, x0, y0 - 0.5, num_heads, D // num_heads, colors)
    for b in range(B):
        _draw_block(ax, x0, y0 + b * (L + _GAP), token[b], head[b], colors, label=f"sequence {b}", label_side=label_side)
    ax.text(x0 + D / 2, y0 + B * L + (B - 1) * _GAP + 0.4, caption, ha="center", va="top", fontsize=9)


def _footnote(ax: Axes, height: float, text: str) -> None:
    ax.text(0.3, height - 0.5, text, fontsize=8.5, color="#555555", va="bottom")


def _layout_axes(width: float, height: float, title: str | None) -> tuple[Figure, Axes]:
    fig = plt.figure(figsize=(width * _CELL_INCH, height * _CELL_INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, like the rows of a matrix
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.text(width / 2, 0.35, title, ha="center", va="top", fontsize=11, weight="bold")
    return fig, ax


_SPLIT_HOWS = {  # {n} is L for queries, S for keys and values
    "transpose_qkv": "transpose_qkv({name}, {H})\n(B, {n}, D) -> (B, {n}, H, Dh)\n-> swap {n}, H -> (B, H, {n}, Dh)"
                     "\n-> fold B, H -> (B*H, {n}, Dh)",
    "split_heads": "split_heads({name}, {H})\n(B, {n}, D) -> (B, {n}, H, Dh)\n-> swap {n}, H -> (B, H, {n}, Dh)",
    "reshape_only": "{name}.reshape(B, H, {n}, Dh)\nno swap: WRONG",
}


def split_heads_layout(
    batch: int = 2,
    seq_len: int = 3,
    embed_dim: int = 4,
    num_heads: int = 2,
    name: str = "Q",
    how: str = "transpose_qkv",
    title: str | None = None,
) -> Figure:
    """Diagram of cutting ``name`` (B, L, D) into heads; colour = head, number = token.

    ``how`` is ``"transpose_qkv"`` (the folded layout, blocks labelled by their row
    ``b*H + h``), ``"split_heads"`` (blocks labelled ``[b, h]: seq b, head h``) or ``"reshape_only"``
    (``reshape(B, H, L, Dh)`` without the swap, which mixes tokens and heads in a block).
    The right-hand blocks are computed by running the real functions on a tensor that
    records where each entry came from.

    Shapes:
        left: name (B, L, D); right: B*H blocks of (L, Dh), in the order of the
        folded (B*H, L, Dh) tensor (the same order as (B, H, L, Dh)).
    """
    from .functional import split_heads, transpose_qkv

    Dh = _check_layout_sizes(batch, seq_len, embed_dim, num_heads)
    if how not in _SPLIT_HOWS:
        raise ValueError(f"how must be one of {', '.join(map(repr, _SPLIT_HOWS))}, got {how!r}")
    B, L, D, H = batch, seq_len, embed_dim, num_heads
    codes = _codes(B, L, D)
    if how == "transpose_qkv":
        blocks = transpose_qkv(codes, H)  # (B, L, D) -> (B*H, L, Dh)
    elif how == "split_heads":
        blocks = split_heads(codes, H).reshape(B * H, L, Dh)  # (B, H, L, Dh), blocks in the same order
    else:
        blocks = codes.reshape(B, H, L, Dh).reshape(B * H, L, Dh)
    colors = head_colors(H)

    left_x, left_w = 4.0, D
    right_x = left_x + left_w + 8.5
    top = 2.6
    right_h = B * H * L + (B * H - 1) * _GAP
    left_h = B * L + (B - 1) * _GAP
    width = right_x + Dh + (5.0 if how == "transpose_qkv" else 7.5)  # room for the block labels
    height = top + right_h + 1.6
    fig, ax = _layout_axes(width, height, title)

    # Left: the B sequences, vertically centred against the right-hand stack.
    n = "S" if name in ("K", "V") else "L"  # keys and values have S positions, queries L
    _, token, head = _decode(codes, L, D, Dh)
    _draw_sequences(ax, left_x, top + (right_h - left_h) / 2, token, head, colors, H,
                    f"{name}  (B, {n}, D) = ({B}, {L}, {D})", label_side="left")

    # Right: B*H blocks of (L, Dh).
    seq, token, head = _decode(blocks, L, D, Dh)
    for r in range(B * H):
        y = top + r * (L + _GAP)
        b, h = divmod(r, H)
        if how == "transpose_qkv":
            label = f"row {r} = {b}*{H}+{h}"
        elif how == "split_heads":
            label = f"[{b}, {h}]: seq {b}, head {h}"
        else:
            label = f"[{b}, {h}]: seq {b}, head {h}?"
        _draw_block(ax, right_x, y, token[r], head[r], colors, label=label, label_side="right")
    shape = f"(B*H, {n}, Dh) = ({B * H}, {L}, {Dh})" if how == "transpose_qkv" else f"(B, H, {n}, Dh) = ({B}, {H}, {L}, {Dh})"
    ax.text(right_x + Dh / 2, top - 0.4, shape, ha="center", va="bottom", fontsize=9)

    _arrow(ax, left_x + left_w + 0.6, right_x - 0.6, top + right_h / 2, _SPLIT_HOWS[how].format(name=name, H=H, n=n))
    _footnote(ax, height, "colour = head of the feature, number = token position")
    return fig


def merge_heads_layout(
    batch: int = 2,
    seq_len: int = 3,
    embed_dim: int = 4,
    num_heads: int = 2,
    name: str = "out",
    title: str | None = None,
) -> Figure:
    """Diagram of ``transpose_output``: the per-head outputs put back side by side.

    Computed by folding a tensor of position codes with ``transpose_qkv`` and unfolding it
    with ``transpose_output``; every token's row gets its heads back in order 0..H-1.

    Shapes:
        left: B*H blocks of (L, Dh) (the folded (B*H, L, Dh)); right: (B, L, D).
    """
    from .functional import transpose_output, transpose_qkv

    Dh = _check_layout_sizes(batch, seq_len, embed_dim, num_heads)
    B, L, D, H = batch, seq_len, embed_dim, num_heads
    folded = transpose_qkv(_codes(B, L, D), H)  # (B*H, L, Dh): one block per (sequence, head)
    merged = transpose_output(folded, H)  # (B*H, L, Dh) -> (B, L, D)
    colors = head_colors(H)

    left_x = 6.5
    right_x = left_x + Dh + 9.0
    top = 2.6
    left_h = B * H * L + (B * H - 1) * _GAP
    right_h = B * L + (B - 1) * _GAP
    width = right_x + D + 4.2
    height = top + left_h + 1.6
    fig, ax = _layout_axes(width, height, title)

    seq, token, head = _decode(folded, L, D, Dh)
    for r in range(B * H):
        b, h = divmod(r, H)
        _draw_block(ax, left_x, top + r * (L + _GAP), token[r], head[r], colors, label=f"row {r}: head {h} of seq {b}")
    ax.text(left_x + Dh / 2, top - 0.4, f"(B*H, L, Dh) = ({B * H}, {L}, {Dh})", ha="center", va="bottom", fontsize=9)

    _, token, head = _decode(merged, L, D, Dh)
    _draw_sequences(ax, right_x, top + (left_h - right_h) / 2, token, head, colors, H,
                    f"{name}  (B, L, D) = ({B}, {L}, {D})", label_side="right")

    _arrow(ax, left_x + Dh + 0.6, right_x - 0.6, top + left_h / 2,
           f"transpose_output({name}, {H})\n(B*H, L, Dh) -> (B, H, L, Dh)\n"
           "-> swap H, L -> (B, L, H, Dh)\n-> (B, L, D)")
    _footnote(ax, height, "colour = head, number = token position")
    return fig


def head_scores_layout(
    seq_len: int = 3,
    key_len: int = 4,
    embed_dim: int = 4,
    num_heads: int = 2,
    title: str | None = None,
) -> Figure:
    """Diagram of the scaled dot product of each head, for one sequence of the batch.

    Row h shows Q_h (L, Dh) @ K_h^T (Dh, S) = scores_h (L, S): a head's queries only meet
    the same head's keys. Cell [i, j] of the scores is query token i against key token j.
    The Q and K blocks are cut by the real ``split_heads``.

    Shapes:
        per head: Q_h (L, Dh), K_h^T (Dh, S), scores_h (L, S); L = seq_len, S = key_len.
    """
    from matplotlib.patches import Rectangle

    from .functional import split_heads

    Dh = _check_layout_sizes(1, seq_len, embed_dim, num_heads)
    if isinstance(key_len, bool) or not isinstance(key_len, int) or key_len < 1:
        raise ValueError(f"key_len must be a positive int, got {key_len!r}")
    L, S, D, H = seq_len, key_len, embed_dim, num_heads
    q_blocks = split_heads(_codes(1, L, D), H)[0]  # (H, L, Dh)
    k_blocks = split_heads(_codes(1, S, D), H)[0]  # (H, S, Dh)
    colors = head_colors(H)

    q_x = 3.5
    k_x = q_x + Dh + 2.0
    s_x = k_x + S + 2.0
    row_h = max(L, Dh)
    top = 2.6
    width = s_x + S + 6.0
    height = top + H * row_h + (H - 1) * 1.2 + 1.6
    fig, ax = _layout_axes(width, height, title)
    ax.text(q_x + Dh / 2, top - 0.4, "Q_h  (L, Dh)", ha="center", va="bottom", fontsize=9)
    ax.text(k_x + S / 2, top - 0.4, "K_h^T  (Dh, S)", ha="center", va="bottom", fontsize=9)
    ax.text(s_x + S / 2, top - 0.4, "Q_h K_h^T / sqrt(Dh)  (L, S)", ha="center", va="bottom", fontsize=9)

    for h in range(H):
        y = top + h * (row_h + 1.2)
        _, q_token, q_head = _decode(q_blocks[h], L, D, Dh)
        _, k_token, k_head = _decode(k_blocks[h], S, D, Dh)
        _draw_block(ax, q_x, y, q_token, q_head, colors, prefix="q", label=f"head {h}")
        _draw_block(ax, k_x, y, k_token.T, k_head.T, colors, prefix="k")  # K_h^T: one column per key
        ax.text(k_x - 1.0, y + min(L, Dh) / 2, "@", ha="center", va="center", fontsize=11)
        ax.text(s_x - 1.0, y + min(L, Dh) / 2, "=", ha="center", va="center", fontsize=11)
        for i in range(L):
            for j in range(S):
                ax.add_patch(Rectangle((s_x + j, y + i), 1, 1, facecolor=colors[h], alpha=0.55, edgecolor="white",
                                       linewidth=1.2))
                # same size as the q/k labels: readable at the page's width
                ax.text(s_x + j + 0.5, y + i + 0.5, f"{i}·{j}", ha="center", va="center", fontsize=9)
        ax.add_patch(Rectangle((s_x, y), S, L, fill=False, edgecolor="#444444", linewidth=0.8))
        ax.text(s_x + S + 0.3, y + L / 2, f"softmax per row\n-> weights of head {h}", ha="left", va="center",
                fontsize=8.5)
    _footnote(ax, height, "colour = head; q2 = query token 2, k1 = key token 1; cell i·j = score of query i and key j")
    return fig
