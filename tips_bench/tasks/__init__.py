"""Task types: one module per type, each registering itself with :func:`register_task_type`."""

from tips_bench.tasks import (  # noqa: F401  (import for registration)
    classification,
    correspondence,
    dense,
    retrieval,
    zeroshot,
)
