"""``python -m tips_bench``: the command line, also as torchrun's entry point (``torchrun -m tips_bench run ...``)."""

import sys

from tips_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
