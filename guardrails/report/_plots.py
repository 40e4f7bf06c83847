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
_RC: dict[str, Any] = {"svg.fonttype": "none", "font.size": 8, "axes.spines.top": False,
       "axes.spines.right": False, "svg.hashsalt": "guardrails-report", "path.simplify": True}
_PROLOGUE = re.compile(r"\A.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=72)
    return fig, ax


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout(pad=0.4)
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue()))
    return text.replace("\n", "")


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


def sequential_svg(test: TestView) -> str:
    """The two e-values after each case (log scale) against the boundaries they must cross."""

    def draw() -> str:
        fig, ax = _figure(5.0, 2.0)
        xs = [n for n, _, _ in test.path]
        ax.plot(xs, [math.exp(min(a, 700.0)) for _, a, _ in test.path], color="#1a7f37",
                label="e-value: candidate not worse")
        ax.plot(xs, [math.exp(min(r, 700.0)) for _, _, r in test.path], color="#cf222e",
                label="e-value: candidate worse")
        if test.accept_at:
            ax.axhline(test.accept_at, color="#1a7f37", linestyle="--", linewidth=0.8)
        if test.reject_at:
            ax.axhline(test.reject_at, color="#cf222e", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("cases seen")
        ax.legend(loc="upper left", frameon=False, fontsize=7)
        return _svg(fig)

    return _styled(draw)


def intervals_svg(tests: Sequence[TestView]) -> str:
    """Pass rates with their 95% intervals, incumbent and candidate, one row per test."""

    def draw() -> str:
        shown = [t for t in tests if t.candidate is not None]
        fig, ax = _figure(5.0, 1.0 + 0.4 * len(shown))
        for row, test in enumerate(shown):
            for side, offset, colour in (("incumbent", -0.15, "#57606a"),
                                         ("candidate", 0.15, "#0969da")):
                interval = getattr(test, side)
                if interval is None:
                    continue
                ax.errorbar([interval.rate], [row + offset],
                            xerr=[[interval.rate - interval.low], [interval.high - interval.rate]],
                            fmt="o", markersize=3, capsize=2, color=colour,
                            label=side if row == 0 else None)
        ax.set_yticks(range(len(shown)), [f"test {i + 1}" for i in range(len(shown))])
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlabel("pass rate (95% interval)")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=2, frameon=False, fontsize=7)
        return _svg(fig)

    return _styled(draw)
