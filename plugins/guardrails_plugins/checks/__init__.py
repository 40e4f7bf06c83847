"""Update checks: static checks on a proposal and its candidate state, run by the update gate
before any candidate is built.

Each module defines one plugin (``plugin``), found through the ``guardrails.plugins``
entry points; ``_pointers`` holds the JSON Pointer helpers they share. They import
only the public ``guardrails`` API.
"""
