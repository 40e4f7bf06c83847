"""Rendering a ``ReportData`` into one self-contained HTML page with Jinja2.

Autoescaping is on for every template: rationales, finding messages, case
ids and inputs are text a model (or an attacker) may have written, so they
reach the page only as escaped text. The plots are the only markup inserted
as is, and they are SVG that ``_plots`` drew from numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ._transparency import Transparency
from ._view import PATH_LIMIT, ReportData, withhold


@lru_cache(maxsize=1)
def _environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # the `report` extra is missing
        raise ImportError(
            f"the report needs Jinja2 and matplotlib ({exc}); install them with: "
            "pip install 'guardrails-middleware[report]'") from None
    env = jinja2.Environment(loader=jinja2.PackageLoader("guardrails.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["withhold"] = lambda text, hidden: withhold(str(text), hidden)
    env.filters["timestamp"] = lambda t: datetime.fromtimestamp(t, UTC).strftime(
        "%Y-%m-%d %H:%M UTC")
    return env


def _plots(data: ReportData) -> dict[str, Any]:
    from markupsafe import Markup

    from ._plots import drift_svg, sequential_svg, timeline_svg

    # Markup: these are our own SVG, drawn from numbers, with no model-authored text.
    with_path = [d for d in data.details if any(t.path for t in d.tests)]
    sequential = {d.index: Markup(sequential_svg(d.tests))
                  for d in with_path}
    return {"timeline": Markup(timeline_svg(data.points)) if data.points else "",
            "drift": Markup(drift_svg(data.drift, data.drift_budget)) if data.drift else "",
            "sequential": sequential, "limit": PATH_LIMIT}


def render_report(data: ReportData, statement: Transparency, *,
                  review: dict[str, Any] | None = None) -> str:
    """The page as a string: the file report, or (with ``review``) the review page.

    ``review`` holds ``csrf`` (the form token), ``reviewer`` (the default
    name) and optionally ``message``/``ok`` (the outcome of the last action).
    """
    template = _environment().get_template("report.html.j2")
    return str(template.render(
        data=data, statement=statement, plots=_plots(data), review=review,
        detailed={d.index for d in data.details}))
