"""``python -m sim``: the simulated device."""

import sys

from sim.cli import main

sys.exit(main())
