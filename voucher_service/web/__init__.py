"""Templates and static files of what people look at (the reconciliation report)."""
