"""`python -m sandbox [--accounts N] [--failing NAME|INDEX|none] [--seed S] [--report PATH]`."""

import sys

from sandbox.demo import main

sys.exit(main(sys.argv[1:], sys.stdout))
