"""Benchmarks whose results are recorded under bench/results/."""
