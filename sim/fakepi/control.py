"""The fake Pi's control channel: a Unix socket in the child through which a test works the hardware.

One JSON object a line each way. Requests (``op`` and its arguments):

- ``ping``: ``{"ok": true, "pid": ...}``.
- ``drive``, ``gpio``, ``level``: the outside world drives a line (0: a
  contact closed to ground, 1, or null: let go).
- ``edge``, ``gpio``, ``level``: an edge to ``level`` reported whatever the
  line's level (two edges of the same level in a row, as a Pi can report).
- ``wave``, ``gpio``, ``steps``: ``[[level, microseconds], ...]`` driven in
  the child, each edge stamped with the time it was due; answered when done.
- ``records``, ``since``: bus transactions from ``since`` on
  (:meth:`sim.fakepi.kernel.BusRecord.as_json`).
- ``lines``: every line touched, who holds it and how.
- ``notify_dir``: lgpio's working directory, once lgpio chose it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

from sim.fakepi.kernel import Kernel

logger = logging.getLogger(__name__)

#: Where the socket lives under the fake root.
SOCKET = os.path.join("run", "control.sock")


def answer(kern: Kernel, request: dict[str, Any]) -> dict[str, Any]:
    """One request to the kernel, one answer (errors are answers too)."""
    op = request.get("op")
    try:
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "drive":
            kern.drive(int(request["gpio"]), request.get("level"))
            return {"ok": True}
        if op == "edge":
            kern.edge(int(request["gpio"]), int(request["level"]))
            return {"ok": True}
        if op == "wave":
            kern.wave(int(request["gpio"]), [(lv, float(us)) for lv, us in request["steps"]])
            return {"ok": True}
        if op == "records":
            return {"ok": True, "records": [r.as_json() for r in kern.records(int(request.get("since", 0)))]}
        if op == "lines":
            return {"ok": True, "lines": kern.lines(), "dropped": kern.dropped}
        if op == "output_edges":
            return {"ok": True, "edges": kern.output_edges(int(request.get("since", 0)))}
        if op == "notify_dir":
            return {"ok": True, "dir": kern.chosen_work_dir}
    except (KeyError, TypeError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": False, "error": f"unknown op {op!r}"}


def serve(kern: Kernel, path: str) -> threading.Thread:
    """Listen on ``path`` in a daemon thread, one thread per connection."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_session, args=(kern, conn), daemon=True, name="fakepi-session").start()

    thread = threading.Thread(target=accept, daemon=True, name="fakepi-control")
    thread.start()
    return thread


def _session(kern: Kernel, conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as stream:
        for line in stream:
            try:
                request = json.loads(line)
            except ValueError:
                reply = {"ok": False, "error": "not JSON"}
            else:
                reply = answer(kern, request) if isinstance(request, dict) else {"ok": False, "error": "not an object"}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()


class ControlClient:
    """The test's end of the socket.

    Args:
        path: the socket's path.
        timeout: seconds to wait for an answer.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.stream = self.sock.makefile("rwb")

    def __call__(self, op: str, **args: Any) -> dict[str, Any]:
        self.stream.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.stream.flush()
        line = self.stream.readline()
        if not line:
            raise ConnectionError("the fake Pi closed its control socket (did the program exit?)")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"fake Pi: {op}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        self.stream.close()
        self.sock.close()
