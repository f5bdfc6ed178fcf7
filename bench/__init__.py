"""Benchmarks: each prints a markdown table with ratios to baselines measured in the
same run, and keeps its latest table under bench/results/."""
