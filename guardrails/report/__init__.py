"""Reports: the ledger as a self-contained HTML file, a transparency statement, a review page.

What lives here: reading a ledger into frozen view models (``_view``), the
transparency statement an application can show its users (``_transparency``),
inline-SVG plots (``_plots``, matplotlib imported only when a plot is drawn),
the Jinja2 templates and their rendering (``_render``, autoescaped: every
string a model wrote is hostile input), and the local review page
(``_serve``, Starlette on 127.0.0.1 with a token and CSRF-protected forms).
It reads the ledger through the public ``ledger`` API and never writes it,
except through ``gate.approve_pending``/``gate.reject_pending`` when a human
decides on the review page, exactly as the CLI does. Every view verifies the
ledger first and, when it does not verify, says so at the top in red and
marks what it shows as unverified. Imports ``ledger``, ``blobs``, ``gate``,
``stats``, ``canary`` and the shared modules; nothing in the core imports it,
so ``import guardrails`` stays lean (the template and plot libraries are the
``report`` extra).
"""

from ._commands import run_report, run_transparency
from ._render import render_report
from ._serve import serve_command
from ._transparency import Transparency, transparency
from ._view import CaseRef, DecisionView, ReportData, TestView, read_report

__all__ = [
    "CaseRef",
    "DecisionView",
    "ReportData",
    "TestView",
    "Transparency",
    "read_report",
    "render_report",
    "run_report",
    "run_transparency",
    "serve_command",
    "transparency",
]
