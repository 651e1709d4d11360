"""Run every benchmark in this folder, one after another, each in its own process.

Usage: ``python benchmarks/run_all.py [--quick]`` (``make bench``). Each benchmark starts and stops
its own emulator on 127.0.0.1 and prints its table with ratios against a baseline measured in
the same run; this script only sequences them and stops at the first failure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    extra = sys.argv[1:]
    scripts = sorted(HERE.glob("bench_*.py"))
    for script in scripts:
        print(f"\n=== {script.name} {' '.join(extra)}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script), *extra], check=False)
        print(
            f"=== {script.name} finished in {time.monotonic() - started:.0f} s (exit {result.returncode})",
            flush=True,
        )
        if result.returncode != 0:
            sys.exit(result.returncode)


if __name__ == "__main__":
    main()
