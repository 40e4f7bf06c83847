"""Runtime policies: scanners and limits on requests and responses, run in the runtime chain.

Each module defines one plugin (``plugin``), found through the ``guardrails.plugins``
entry points; ``_text`` holds the scanning helpers they share. They import only
the public ``guardrails`` API.
"""
