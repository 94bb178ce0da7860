"""Benchmarks: plain scripts (`python -m tests.benchmarks.run_all`), never collected by pytest."""

import sys
from pathlib import Path

# The tests' helper modules import one another by name (pytest puts tests/ on the path); so do we.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
