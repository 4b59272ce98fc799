"""``python -m atlas``: the ``atlas`` command line (see :mod:`atlas.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
