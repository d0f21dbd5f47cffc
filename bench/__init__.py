"""Benchmarks of flask-jobrunner and its peers, side by side: ``python -m bench``.

``bench.cli`` runs each system in a fresh ``bench.driver`` process, which
runs ``bench.workloads`` against one of ``bench.systems``; ``bench.report``
prints the tables. ``docs/performance.rst`` describes the figures.
"""
