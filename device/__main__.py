"""``python -m device``: the device program."""

import sys

from device.cli import main

sys.exit(main())
