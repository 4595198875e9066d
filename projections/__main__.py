"""`python -m projections --worker <name> --http-port <port>`: see projections.cli."""

import sys

from projections.cli import main

sys.exit(main())
