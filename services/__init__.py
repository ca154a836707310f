"""One folder per supervised service; each `__init__.py` defines `SERVICE` (see entrypoint.registry)."""
