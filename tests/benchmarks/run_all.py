"""Run every benchmark in this folder in turn: `python -m tests.benchmarks.run_all` (what `make bench` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]


def main() -> int:
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        module = f"tests.benchmarks.{path.stem}"
        print(f"== {module}", flush=True)
        # Each in its own process: one benchmark's servers and threads cannot skew the next.
        if subprocess.run([sys.executable, "-m", module], cwd=PROJECT_ROOT).returncode != 0:
            failed.append(module)
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
