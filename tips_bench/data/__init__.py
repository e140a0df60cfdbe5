"""Datasets: one module per on-disk format, plus the built-in synthetic world."""
