#!/usr/bin/env python
"""Entry point: ``python run_bench.py --help``. All logic lives in ``harness/``."""
import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
