"""Throughput and latency of the whole pipeline against the broker's ceiling: the script behind `terrain bench`.

Usage (the same options as the command):
    python bench/bench_throughput.py [-n 20000] [--rate 1000] [--seconds 10] [--scorer fast] [--set NAME=VALUE]
"""

from __future__ import annotations

import sys

from terrain.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]], prog_name="bench_throughput.py")
