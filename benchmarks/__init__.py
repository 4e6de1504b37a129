"""Benchmarks, run as ``python benchmarks/<name>.py``; a package, so one can import another."""
