"""``Wifi``: join a Wi-Fi network from a terminal, as Improv does from a browser.

``Wifi`` alone shows the network (as ``Status network``); ``Wifi <ssid>
<password>`` joins one (quote a name with spaces: ``Wifi "Hall Net"
secret``; no password: an open network). Joining needs authorisation, as
Improv's Wi-Fi settings do. The password is never echoed, logged or kept:
the answer names the network and the address the device got.
"""

from __future__ import annotations

import logging
import shlex

from device.console.actions import network_section
from device.console.commands import Answer, Command, Context, Needs
from device.errors import CommandRefused, NetworkError

logger = logging.getLogger(__name__)


def split_wifi(arg: str) -> tuple[str, str]:
    """``(ssid, password)`` from what follows ``Wifi``.

    Quoted parts as a shell reads them; unquoted, the first word is the name and
    the rest of the line (spaces kept) the password.

    Raises:
        CommandRefused: ``invalid_value`` (unbalanced quotes, too many parts);
            the message never contains the password.
    """
    if arg.startswith(('"', "'")):
        try:
            parts = shlex.split(arg)
        except ValueError:
            raise CommandRefused("invalid_value", 'unbalanced quotes: use Wifi "network name" "password"') from None
        if not 1 <= len(parts) <= 2:
            raise CommandRefused("invalid_value", 'use: Wifi "network name" "password"')
        return parts[0], parts[1] if len(parts) > 1 else ""
    ssid, _, password = arg.partition(" ")
    return ssid, password.strip()


def _wifi(ctx: Context, arg: str) -> Answer:
    if not arg:
        return {"ok": True, **network_section(ctx)}
    ssid, password = split_wifi(arg)
    if not ssid or len(ssid.encode("utf-8")) > 32:
        raise CommandRefused("invalid_value", "a Wi-Fi network's name has 1 to 32 bytes")
    if password and not 8 <= len(password) <= 63:
        raise CommandRefused("invalid_value", "a WPA password has 8 to 63 characters (none: an open network)")
    if ctx.network is None:
        raise CommandRefused("no_wifi", "this device has no Wi-Fi backend")
    try:
        ctx.network.connect(ssid, password)
    except NetworkError as e:
        # The backend keeps the password out of its messages.
        raise CommandRefused("wifi_failed", str(e)) from None
    finally:
        del password
        if ctx.network_changed is not None:
            ctx.network_changed()
    logger.info("Wi-Fi %r joined from the console", ssid)
    return {"ok": True, "joined": ssid, **network_section(ctx)}


COMMANDS = {
    "wifi": Command(_wifi, Needs.TO_CHANGE, name="Wifi",
                    summary="show the Wi-Fi, or join a network (the password is never shown)",
                    usage='Wifi [ssid [password]]  (quote a name with spaces: Wifi "Hall Net" password)',
                    example="Wifi HallNet hall-password"),
}
