"""Benchmarks: registry (what), run (harness), visualize (plots). Run from the repository root."""
