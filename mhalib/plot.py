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

__all__ = ["attention_heatmap", "attention_heads"]

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
        fig, ax = plt.subplots(figsize=(0.55 * S + 2.2, 0.5 * L + 1.3), layout="constrained")
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
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=8,
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
