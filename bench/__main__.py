"""Run the benchmark: ``python -m bench --help``."""

from bench.run import main

main()
