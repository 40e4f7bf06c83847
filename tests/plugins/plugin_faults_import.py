"""A plugin module that raises while it is imported (fault injection)."""

raise RuntimeError("import-time failure in a plugin module")
