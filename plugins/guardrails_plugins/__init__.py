"""Built-in policy plugins, client adapters and demos of guardrails.

Shipped in the same distribution as the core but found only through entry
points, exactly like third-party plugins; the core never imports this package.
"""
