"""``python -m rlport.train``: the same as ``rlport train``."""

import sys

from rlport.train.cli import main

if __name__ == "__main__":  # engines that spawn processes re-import the main module
    sys.exit(main())
