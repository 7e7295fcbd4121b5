"""Smoke tests of the benchmark scripts: each runs briefly and prints its ratios."""
