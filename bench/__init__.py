"""Benchmarks for codeinterp (performance targets: DESIGN.md §3). Not unit tests.

Run from the repository root, e.g. `.venv/bin/python -m bench.executors`.
"""
