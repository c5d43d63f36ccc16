"""``python -m kdskin``: the same as the ``kdskin`` command."""

import sys

from kdskin.cli import main

if __name__ == "__main__":
    sys.exit(main())
