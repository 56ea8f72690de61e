"""The tensor-layout diagrams of mhalib.plot are computed from the real layout functions.

Each test reads the coloured cells back from the figure: in a correct split every block
of the folded tensor is one colour (one head) with tokens 0..L-1 in order; the wrong
reshape mixes them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mhalib import plot  # noqa: E402


def cells(fig) -> list[tuple[float, float, tuple, str]]:
    """(x, y, facecolor, text) of every unit cell drawn in the figure's only axes."""
    ax = fig.axes[0]
    texts = {(round(t.get_position()[0] - 0.5, 3), round(t.get_position()[1] - 0.5, 3)): t.get_text() for t in ax.texts}
    out = []
    for p in ax.patches:
        if isinstance(p, Rectangle) and p.get_width() == 1 and p.get_height() == 1 and p.get_fill():
            x, y = round(p.get_x(), 3), round(p.get_y(), 3)
            out.append((x, y, tuple(round(c, 3) for c in p.get_facecolor()[:3]), texts.get((x, y), "")))
    return out


def right_blocks(fig, rows_per_block: int) -> list[list[tuple]]:
    """Cells right of the arrow, grouped into blocks by vertical position."""
    all_cells = cells(fig)
    xs = sorted({c[0] for c in all_cells})
    split = max(b for a, b in zip(xs, xs[1:]) if b - a > 2)  # the big gap is the arrow
    right = sorted((c for c in all_cells if c[0] >= split), key=lambda c: (c[1], c[0]))
    ys = sorted({c[1] for c in right})
    blocks = [ys[i:i + rows_per_block] for i in range(0, len(ys), rows_per_block)]
    return [[c for c in right if c[1] in block] for block in blocks]


def test_split_layout_blocks_are_one_head_and_tokens_in_order() -> None:
    fig = plot.split_heads_layout(batch=2, seq_len=3, embed_dim=6, num_heads=3)
    blocks = right_blocks(fig, 3)
    assert len(blocks) == 2 * 3
    colors = plot.head_colors(3)
    for r, block in enumerate(blocks):
        assert {c[2] for c in block} == {tuple(round(v, 3) for v in colors[r % 3][:3])}
        assert [c[3] for c in block] == ["0", "0", "1", "1", "2", "2"]
    plt.close(fig)


def test_reshape_only_layout_shows_mixed_blocks() -> None:
    fig = plot.split_heads_layout(batch=1, seq_len=3, embed_dim=4, num_heads=2, how="reshape_only")
    blocks = right_blocks(fig, 3)
    assert any(len({c[2] for c in block}) > 1 for block in blocks)
    assert [c[3] for c in blocks[0]] == ["0", "0", "0", "0", "1", "1"]
    plt.close(fig)


def test_merge_layout_puts_heads_side_by_side() -> None:
    fig = plot.merge_heads_layout(batch=2, seq_len=3, embed_dim=4, num_heads=2)
    right = right_blocks(fig, 3)
    assert len(right) == 2
    colors = [tuple(round(v, 3) for v in c[:3]) for c in plot.head_colors(2)]
    for block in right:
        assert [c[2] for c in block[:4]] == [colors[0], colors[0], colors[1], colors[1]]
        assert [c[3] for c in block] == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    plt.close(fig)


def test_scores_layout_draws_one_score_block_per_head() -> None:
    fig = plot.head_scores_layout(seq_len=3, key_len=5, embed_dim=6, num_heads=3)
    score_cells = [c for c in cells(fig) if "·" in c[3]]
    assert len(score_cells) == 3 * 3 * 5
    assert {c[3] for c in score_cells} == {f"{i}·{j}" for i in range(3) for j in range(5)}
    plt.close(fig)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: plot.split_heads_layout(embed_dim=5, num_heads=2), r"embed_dim \(5\) must be divisible by num_heads \(2\)"),
        (lambda: plot.split_heads_layout(how="permute"), "how must be one of"),
        (lambda: plot.merge_heads_layout(batch=0), "batch must be a positive int"),
        (lambda: plot.head_scores_layout(key_len=0), "key_len must be a positive int"),
    ],
)
def test_layout_arguments_are_checked(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_split_layout_labels_name_sequence_and_head_and_keys_use_s() -> None:
    fig = plot.split_heads_layout(batch=2, seq_len=4, embed_dim=4, num_heads=2, name="Q", how="split_heads")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "[1, 0]: seq 1, head 0" in texts
    plt.close(fig)
    fig = plot.split_heads_layout(batch=2, seq_len=4, embed_dim=4, num_heads=2, name="K", how="transpose_qkv")
    arrow = next(t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("transpose_qkv("))
    assert "(B, S, D)" in arrow and "(B*H, S, Dh)" in arrow and "fold" in arrow
    assert ", L," not in arrow  # keys have S positions, not L
    plt.close(fig)


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plot.split_heads_layout(batch=2, seq_len=3, embed_dim=4, num_heads=2, how="split_heads"),
        lambda: plot.split_heads_layout(batch=2, seq_len=4, embed_dim=4, num_heads=2, name="K"),
        lambda: plot.merge_heads_layout(batch=2, seq_len=3, embed_dim=4, num_heads=2),
        lambda: plot.head_scores_layout(seq_len=3, key_len=4, embed_dim=4, num_heads=2, title="t"),
    ],
    ids=["split_heads", "transpose_qkv", "merge", "scores"],
)
def test_layout_text_is_readable_at_page_width(draw) -> None:
    """No label smaller than 8.5 pt, and the figure fits the page (about 8 inches).

    At the notebook's 100 dpi, 8.5 pt is about 12 px; the score labels of the scores
    diagram used to be 7 pt (about 10 px) in cells of 30 px.
    """
    fig = draw()
    sizes = [t.get_fontsize() for t in fig.axes[0].texts if t.get_text().strip()]
    assert sizes and min(sizes) >= 8.5
    assert fig.get_size_inches()[0] <= 8.0
    plt.close(fig)
