"""Laws of the rendering: whatever a model writes reaches the page as text, and hidden text never."""

from __future__ import annotations

import html.parser
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.report import DecisionView, ReportData, render_report, transparency
from guardrails.report._view import WITHHELD, withhold

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Elements(html.parser.HTMLParser):
    """Records the start tag of every element of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _page(rationale: str, hidden: frozenset[str] = frozenset()) -> str:
    decision = DecisionView(
        index=1, hash="0" * 64, verdict="rejected", kind="prompt", source="model",
        proposal_id=rationale[:40], parent="a" * 64, candidate="b" * 64, decided_at=_NOW,
        rationale=withhold(rationale, hidden) or "", anchor=False, deciding=None, approver=None,
        rollback=False, findings=())
    data = ReportData(source=rationale[:20], generated_at=_NOW, verified=True, problem=None, size=2,
                      served="a" * 64, anchor="a" * 64, root=None, counts={"rejected": 1},
                      timeline=(decision,), details=(decision,), older=0, points=(), drift=(),
                      drift_budget=None, events=(), pending=())
    return render_report(data, transparency(data))


_BASELINE = _Elements()
_BASELINE.feed(_page("plain"))


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\"'&/=; scriptimgonerrorhrefsvg")), min_size=1, max_size=60))
def test_model_text_never_adds_an_element(rationale: str) -> None:
    """A rationale (and an id) made of markup characters adds no element to the page."""
    parser = _Elements()
    parser.feed(_page(rationale))
    assert parser.tags == _BASELINE.tags


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_text_containing_a_hidden_input_is_withheld(secret: str, before: str, after: str) -> None:
    """Any text with a hidden input inside it is replaced whole; other text is left as it is."""
    assert withhold(before + secret + after, frozenset({secret})) == WITHHELD
    if secret not in before:
        assert withhold(before, frozenset({secret})) == before
