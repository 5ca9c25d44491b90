"""Where an installed device keeps things (``deploy/install.sh`` and the ``.deb`` lay them out)."""

#: The configuration the service starts with.
SYSTEM_CONFIG = "/etc/window-evaluator/config.toml"
#: The service's data: the outbox, the settings, the device key (systemd's ``StateDirectory``).
STATE_DIR = "/var/lib/window-evaluator"
#: The user the service runs as.
SERVICE_USER = "evaluator"
#: The systemd unit.
UNIT = "window-evaluator.service"
