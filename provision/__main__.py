"""``python -m provision``: the provisioning command."""

import sys

from provision.cli import main

sys.exit(main())
