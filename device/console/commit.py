"""``Commit``, ``Discard`` and ``FactoryReset`` as console entries, with their help.

The staging and the commit themselves are :mod:`device.console.staging`'s
(the loop's side of a change); this module gives them their help and makes
``Commit`` say when a newly set hall server cannot be reached: it still
commits (the hall may be down for a while; the device keeps every rating
until it answers) and offers ``Test uplink``.
"""

from __future__ import annotations

import dataclasses
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

from device.console import staging
from device.console.commands import Answer, Command, Context

#: How long ``Commit`` tries to reach a newly set hall server before it says it could not.
REACH_S = 2.0


def _staging_commands() -> dict[str, Command]:
    """``Commit``, ``Discard``, ``FactoryReset`` with their help; ``Commit`` says when the hall is out of reach."""
    helps: dict[str, dict[str, Any]] = {
        "commit": dict(name="Commit", summary="validate, save and apply everything staged, or refuse naming each key",
                       usage="Commit", example="Commit"),
        "discard": dict(name="Discard", summary="drop everything staged", usage="Discard", example="Discard"),
        "factoryreset": dict(name="FactoryReset", summary="erase settings, device key and PIN (ratings are kept)",
                             usage="FactoryReset yes", example="FactoryReset yes"),
    }
    commands = {name: dataclasses.replace(command, **helps.get(name, {}))
                for name, command in staging.COMMANDS.items()}
    if "commit" in commands:
        commands["commit"] = dataclasses.replace(commands["commit"], handler=_commit_and_reach(commands["commit"]))
    return commands


def reach(url: str, timeout: float = REACH_S) -> str | None:
    """Why the hall server at ``url`` cannot be reached (a TCP connection to its host and port), or None."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"


def _commit_and_reach(commit: Command) -> Callable[[Context, str], Answer | None]:
    def handler(ctx: Context, arg: str) -> Answer | None:
        before = ctx.device.current_config().upload.server
        staged = ctx.staging.values.get("upload.server")
        answer = commit.handler(ctx, arg)
        if answer is None or not answer.get("ok") or staged is None or staged == before:
            return answer
        # Committed even so: the hall may be down for a while; the device keeps ratings until it answers.
        why = reach(str(staged))
        if why is not None:
            answer = {**answer, "reachable": False, "warning": f"the hall server cannot be reached now ({why}); "
                      "saved anyway: ratings are kept until it answers. Send Test uplink to check it"}
        else:
            answer = {**answer, "reachable": True}
        return answer
    return handler


#: ``Commit``, ``Discard`` and ``FactoryReset``, each with its help.
COMMANDS = _staging_commands()
