"""Built-in policy plugins, client adapters and demos of guardrails.

Shipped in the same distribution as the core but found only through entry
points, exactly like third-party plugins; the core never imports this package.

- ``policies/``: runtime policies (pii, deny_list, regex, size_limit, json_schema, rate_limit)
- ``checks/``: update checks (invariants, drift_budget, update_rate_limit, provenance)
- ``adapters/``: client adapters (openai, langchain, dspy, sklearn, river) and their test servers
- ``demos/``: runnable demos (``guardrails demo NAME``)

The flat 0.1 module paths (``guardrails_plugins.openai_adapter`` and the like)
still import, with a ``DeprecationWarning`` naming the new path, until 0.3.
"""

from ._moved import install as _install_moved_paths

_install_moved_paths()
