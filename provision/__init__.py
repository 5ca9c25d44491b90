"""``evaluator-provision``: set up a device over its serial console from the host.

Runs on the technician's laptop, not on the device. Applies a profile (a
TOML file shaped like ``config.toml``, or one row of a hall's CSV list of
windows) to the device on ``--port``, commits it, reads every value back,
runs the self-tests a technician need not watch (display, uplink) and prints
a report. Exits non-zero with a clear reason when the device does not
answer, is not the expected one, refuses the PIN or rejects a value. The
device key and the PIN are never printed.

It talks to the device only through the console's command lines; from the
device's code it uses nothing but :mod:`device.config` (to check a profile
before touching the port) and the serial port opener.

For a hall's batch it checks the whole CSV before any port is opened, then
walks the windows device after device and writes a results file with each
device's public key (:mod:`~provision.batch`); the hall imports it.

The modules: :mod:`~provision.profiles` (reading profiles and checking CSV rows),
:mod:`~provision.session` (one command line, one JSON answer),
:mod:`~provision.run` (apply, commit, read back, test, report; always locks),
:mod:`~provision.batch` (next-device mode, the results file) and
:mod:`~provision.cli` (the command line).
"""

#: Exit codes of ``evaluator-provision``.
EXIT_OK = 0
EXIT_USAGE = 2          #: usage or profile error
EXIT_PORT = 3           #: the port cannot be opened
EXIT_TIMEOUT = 4        #: no answer in time
EXIT_WRONG_DEVICE = 5   #: not the device given with --expect-device
EXIT_PIN = 6            #: PIN refused or needed
EXIT_REJECTED = 7       #: a value rejected or the commit failed
EXIT_READBACK = 8       #: a value read back differs
EXIT_TEST = 9           #: a self-test failed
EXIT_BATCH = 10         #: next-device mode ended with windows not provisioned (see the results file)
