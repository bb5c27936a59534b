"""skyclass benchmarks: one command (``python -m benchmarks.run``) that prints a table."""
