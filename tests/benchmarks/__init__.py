"""Benchmarks: plain scripts (`python -m tests.benchmarks.run_all`), never collected by pytest."""
