"""Benchmarks, runnable by users: ``python -m dynattn.bench.<name> --help``.

Timings are medians of interleaved runs (every variant once per round, in a shuffled
order), reported as ratios against a reference measured in the same run.
"""
