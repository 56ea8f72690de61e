"""An interactive head view: pick a layer and a head, see its attention weights on a sentence.

:class:`HeadView` displays as one self-contained block of HTML and JavaScript: the data
are written into the page, nothing is loaded from anywhere and no kernel is needed, so it
works in the built book offline (bertviz, the usual tool, loads its scripts from the web).

Each query token on the left is joined to each key token on the right by a line whose
opacity is the weight; pointing at a token on the left shows that query's weights only.

Shapes:
    per sentence: tokens, n strings; weights (layers, H, n, n) over the real tokens only
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["HeadView", "head_view_html"]

_SCRIPT = r"""
(function () {
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var svg = root.querySelector("svg"), title = root.querySelector(".hv-title");
  var NS = "http://www.w3.org/2000/svg", pick = {}, tokens = [], heading = "";
  ["sentence", "layer", "head"].forEach(function (name) {
    pick[name] = root.querySelector("select[data-pick='" + name + "']");
    pick[name].addEventListener("change", draw);
  });
  function el(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function focus(only) {
    // show every query's lines (only < 0) or those of query `only`
    svg.querySelectorAll("line").forEach(function (line) {
      line.style.display = (only < 0 || +line.getAttribute("data-q") === only) ? "" : "none";
    });
    title.textContent = heading + (only >= 0 ? " (query " + tokens[only] + ")" : "");
  }
  function draw() {
    var s = data.sentences[+pick.sentence.value];
    var layer = +pick.layer.value, head = +pick.head.value;
    var w = s.weights[layer][head], n = s.tokens.length, step = 22, top = 24;
    var left = 140, right = 360;
    tokens = s.tokens;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("height", top + n * step + 8);
    svg.appendChild(el("text", {x: left, y: 14, "text-anchor": "end", "class": "hv-head"}, "query"));
    svg.appendChild(el("text", {x: right, y: 14, "class": "hv-head"}, "key"));
    for (var i = 0; i < n; i++) {
      for (var j = 0; j < n; j++) {
        var a = w[i][j] / 1000;
        if (a < 0.01) { continue; }
        svg.appendChild(el("line", {x1: left + 6, y1: top + i * step, x2: right - 6, y2: top + j * step,
          stroke: "#1565c0", "stroke-width": 2.5, "stroke-opacity": a.toFixed(3), "data-q": i, "data-k": j}));
      }
    }
    s.tokens.forEach(function (tok, i) {
      var t = el("text", {x: left, y: top + i * step + 5, "text-anchor": "end", "class": "hv-q", "data-q": i}, tok);
      t.addEventListener("mouseenter", function () { focus(i); });
      t.addEventListener("mouseleave", function () { focus(-1); });
      svg.appendChild(t);
      svg.appendChild(el("text", {x: right, y: top + i * step + 5, "class": "hv-k"}, tok));
    });
    var note = data.notes[layer][head];
    heading = "layer " + layer + ", head " + head + (note ? ": " + note : "");
    root.setAttribute("data-shown", pick.sentence.value + "/" + layer + "/" + head);
    focus(-1);
  }
  draw();
})();
"""

_STYLE = """
#%(id)s { font-family: sans-serif; font-size: 14px; margin: 0.5em 0; }
#%(id)s select { margin: 0 0.8em 0 0.2em; font-size: 14px; }
#%(id)s .hv-title { margin: 0.4em 0; font-weight: bold; }
#%(id)s svg text { font-size: 14px; fill: currentColor; }
#%(id)s svg .hv-q { cursor: pointer; }
#%(id)s svg .hv-head { font-style: italic; fill: #777; }
"""


def _brief(text: str, limit: int = 40) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with ... if cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0] + " ..."


def _options(n: int, selected: int, label=str) -> str:
    return "".join(
        f'<option value="{i}"{" selected" if i == selected else ""}>{html.escape(label(i))}</option>' for i in range(n)
    )


def head_view_html(
    tokens: Sequence[Sequence[str]],
    weights: Sequence[Tensor],
    notes: dict[tuple[int, int], str] | None = None,
    element_id: str = "head-view",
    layer: int = 0,
    head: int = 0,
) -> str:
    """The head view as one HTML string (a <div> with its data, style and script inside).

    ``tokens[s]`` are the n token strings of sentence s and ``weights[s]`` its weights
    (layers, H, n, n); ``notes[(layer, head)]`` is shown after the head's name (e.g. its
    role). Weights are stored in thousandths, so the page stays small.
    """
    if len(tokens) != len(weights) or not tokens:
        raise ValueError(f"tokens and weights must be non-empty and of one length, got {len(tokens)} and {len(weights)}")
    if not re.fullmatch(r"[A-Za-z][\w-]*", element_id):
        raise ValueError(f"element_id must be a plain HTML id (letters, digits, - and _), got {element_id!r}")
    shape = tuple(weights[0].shape[:2])
    sentences = []
    for s, (toks, w) in enumerate(zip(tokens, weights)):
        n = len(toks)
        if not isinstance(w, Tensor) or w.dim() != 4 or tuple(w.shape) != shape + (n, n):
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"weights[{s}] must have shape (layers, H, n, n) = {shape + (n, n)}, got {got}")
        thousandths = torch.round(w.detach().double() * 1000).to(torch.int64)  # (layers, H, n, n)
        sentences.append({"tokens": list(toks), "weights": thousandths.tolist()})
    num_layers, num_heads = shape
    notes = notes or {}
    table = [[notes.get((l, h), "") for h in range(num_heads)] for l in range(num_layers)]
    data = json.dumps({"sentences": sentences, "notes": table}, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # a token "</script>" must not end the data block
    first = lambda i: _brief(" ".join(tokens[i][1:-1]))  # noqa: E731 - the sentence, in brief
    ids = {"id": element_id}
    return (
        f'<div id="{element_id}" class="mhalib-head-view">'
        f"<style>{_STYLE % ids}</style>"
        f'<label>sentence<select data-pick="sentence">{_options(len(tokens), 0, first)}</select></label>'
        f'<label>layer<select data-pick="layer">{_options(num_layers, layer)}</select></label>'
        f'<label>head<select data-pick="head">{_options(num_heads, head)}</select></label>'
        f'<div class="hv-title"></div>'
        f'<svg width="520" height="100" role="img" aria-label="attention weights of the chosen head"></svg>'
        f'<script type="application/json">{data}</script>'
        f"<script>{_SCRIPT % {'id': json.dumps(element_id)}}</script>"
        "</div>"
    )


class HeadView:
    """Displays :func:`head_view_html` in a notebook (and in the book built from it)."""

    def __init__(self, tokens, weights, notes=None, element_id: str = "head-view", layer: int = 0, head: int = 0) -> None:
        self.html = head_view_html(tokens, weights, notes, element_id, layer, head)
        self.num_sentences = len(tokens)
        self.shape = tuple(weights[0].shape[:2])

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        layers, heads = self.shape
        return f"<HeadView: {self.num_sentences} sentences, {layers} layers, {heads} heads>"
