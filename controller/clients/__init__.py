"""Clients of the four live APIs.

``http`` is the one boundary to the network (sessions, auth refresh, retries, error
mapping); ``era`` and the backup clients build on it and speak each product's dialect.
Callers (fetching, applying, the CLI) import the modules, not names from this package.
"""
