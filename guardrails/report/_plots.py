"""Plots as inline SVG strings, drawn with matplotlib (imported here, lazily, on first plot).

Each function returns one ``<svg>`` element with text kept as text (no
embedded glyphs, no fonts, no images, no links), so a report stays small
and opens with no network. The SVG is produced by matplotlib from numbers
only; labels that could carry model-authored text are never drawn into it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

from ._view import DriftPoint, TestView

COLOURS = {"accepted": "#1a7f37", "rejected": "#cf222e", "inconclusive": "#bf8700",
           "error": "#6e40c9"}
# Text stays text in the font the page chooses (its CSS sets ``svg text``): a short family
# name instead of matplotlib's list keeps every label small.
_RC: dict[str, Any] = {"svg.fonttype": "none", "font.size": 8, "font.family": "sans-serif",
       "font.sans-serif": ["DejaVu Sans"], "axes.spines.top": False,
       "axes.spines.right": False, "svg.hashsalt": "guardrails-report", "path.simplify": True}
_PROLOGUE = re.compile(r"\A.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_GROUP_ID = re.compile(r'<g id="[^"]*"')  # matplotlib's group names collide between plots
_NO_ROTATION = re.compile(r' transform="rotate\(-?0 [\d.]+ [\d.]+\)"')
_BETWEEN_TAGS = re.compile(r">\s+<")
_FONT = re.compile(r"font-family: [^;\"]*;? ?")
# A tenth of a point is finer than any screen shows; only coordinates (attribute values) are
# rounded, never a label's text.
_ATTRIBUTE = re.compile(r'="([^"]*)"')
_DIGITS = re.compile(r"(\d\.\d)\d+")


def _figure(width: float, height: float, right: float = 0.98, rows: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(rows, 1, figsize=(width, height * rows), dpi=72, sharex=True)
    # Fixed margins instead of tight_layout, which draws every figure twice.
    fig.subplots_adjust(left=0.85 / width + 0.02, right=right, bottom=0.3 / rows,
                        top=1 - 0.05 / rows, hspace=0.15)
    return fig, ax


def _plain_log_ticks(ax: Any) -> None:
    """Log-axis labels as plain numbers: matplotlib's default typesets each one as math (slow)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue()))
    text = _NO_ROTATION.sub("", _GROUP_ID.sub("<g", text))
    text = _ATTRIBUTE.sub(lambda m: '="' + _DIGITS.sub(r"\1", m.group(1)) + '"', _FONT.sub("", text))
    return _BETWEEN_TAGS.sub("><", text.replace("\n", " "))


def _styled(draw: Any) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type,unused-ignore]
        return str(draw())


def timeline_svg(points: Sequence[tuple[int, str]]) -> str:
    """Every decision as a dot at its ledger entry, one row per verdict."""

    def draw() -> str:
        fig, ax = _figure(7.5, 1.6)
        rows = list(COLOURS)
        for row, verdict in enumerate(rows):
            xs = [index for index, v in points if v == verdict]
            ax.scatter(xs, [row] * len(xs), s=14 if len(points) < 500 else 4,
                       color=COLOURS[verdict], label=verdict)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("ledger entry")
        ax.xaxis.get_major_locator().set_params(integer=True)
        return _svg(fig)

    return _styled(draw)


def drift_svg(points: Sequence[DriftPoint], budget: float | None) -> str:
    """The served state's distance from its anchor after each accepted decision, and the budget."""

    def draw() -> str:
        fig, ax = _figure(7.5, 2.0)
        xs, ys = [p.index for p in points], [p.distance for p in points]
        ax.step(xs, ys, where="post", color="#0969da", label="distance from anchor")
        anchors = [p for p in points if p.anchor]
        ax.scatter([p.index for p in anchors], [p.distance for p in anchors], marker="D", s=16,
                   color="#0969da", label="anchor (human-approved)")
        if budget is not None:
            ax.axhline(budget, color="#cf222e", linestyle="--", label=f"budget {budget:g}")
        top = max([*ys, budget or 0.0, 0.05])
        ax.set_ylim(0, min(1.05, top * 1.15))
        ax.set_xlabel("ledger entry")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("drift")
        ax.legend(loc="upper left", frameon=False, fontsize=7)
        return _svg(fig)

    return _styled(draw)


def sequential_svg(tests: Sequence[TestView]) -> str:
    """Each test's e-value for acceptance after each case (log scale), and the boundary it
    must cross; the rejection e-value too when it moved. Under the group-sequential design,
    a second panel: the score statistic and the critical value it must fall to. One figure
    per decision."""

    def draw() -> str:
        scored = any(test.score_path for test in tests)
        fig, axes = _figure(6.0, 2.0, right=0.7, rows=2 if scored else 1)
        top = axes[0] if scored else axes
        _draw_e_values(top, tests)
        if scored:
            _draw_scores(axes[1], tests)
        (axes[1] if scored else top).set_xlabel("cases seen")
        return _svg(fig)

    return _styled(draw)


def _draw_e_values(ax: Any, tests: Sequence[TestView]) -> None:
    boundary = None
    for number, test in enumerate(tests, start=1):
        if not test.path:
            continue  # numbered as in the decision's table, which lists every test
        xs = [n for n, _, _ in test.path]
        line, = ax.plot(xs, [math.exp(min(a, 700.0)) for _, a, _ in test.path],
                        label=f"test {number}: not worse")
        if any(r != 0 for _, _, r in test.path):
            ax.plot(xs, [math.exp(min(r, 700.0)) for _, _, r in test.path], linestyle=":",
                    color=line.get_color(), label=f"test {number}: worse")
        boundary = test.accept_at or boundary
    if boundary:
        ax.axhline(boundary, color="#57606a", linestyle="--", linewidth=0.8,
                   label=f"boundary {boundary:g}")
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_ylabel("e-value")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)


def _draw_scores(ax: Any, tests: Sequence[TestView]) -> None:
    """Accepted when the score falls to the dashed line (drawn at the looks only)."""
    for number, test in enumerate(tests, start=1):
        if not test.score_path:
            continue
        line, = ax.plot([n for n, _, _ in test.score_path],
                        [z for _, z, _ in test.score_path], label=f"test {number}: score")
        looks = [(n, c) for n, _, c in test.score_path if c is not None]
        ax.plot([n for n, _ in looks], [c for _, c in looks], linestyle="--", linewidth=0.8,
                color=line.get_color(), label=f"test {number}: accept below")
    ax.set_ylabel("score")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)
