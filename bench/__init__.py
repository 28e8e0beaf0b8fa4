"""Benchmarks: each module's run() measures a figure and its baseline in the same run."""
