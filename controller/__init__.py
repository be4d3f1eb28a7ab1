"""converge: declarative reconciliation of Era roleapps and backup policies."""

__version__ = "0.1.0"
