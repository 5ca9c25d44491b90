"""``python -m device``: the device program."""

import sys

from device.app import main

sys.exit(main())
