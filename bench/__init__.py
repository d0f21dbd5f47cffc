"""Benchmarks of flask-jobrunner: ``python -m bench`` prints a table per backend."""
