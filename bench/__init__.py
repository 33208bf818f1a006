"""Reproducible benchmarks: ``python -m bench.run`` (or ``scripts/bench``) writes
``docs/benchmarks.md`` and ``docs/benchmarks.png``; every figure is a ratio against a baseline
measured in the same run."""
