"""Benchmarks: run as ``.venv/bin/python -m bench.<name> --help``; results go to docs/benchmarks.md."""
