"""Runnable demos, found through the ``guardrails.demos`` entry points (``guardrails demo NAME``).
"""
