"""Frozen-feature probes: light heads and parameter-free classifiers on backbone features."""
