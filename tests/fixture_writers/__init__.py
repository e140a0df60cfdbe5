"""Writers of tiny datasets in their exact official on-disk formats, for the tests and benchmarks.

A plain package beside the tests (pytest puts ``tests/`` on ``sys.path``), not part of the installed
``tips_bench`` package; the benchmarks add ``tests/`` to ``sys.path`` themselves.
"""
