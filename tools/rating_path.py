"""Trace one rating from the button callback to the delivered POST, and count module boundaries.

    python tools/rating_path.py

Runs the device's own code in this process: simulated pins and panel, a
real outbox file, the stand-in hall server on loopback. A profiler records
every call made by a function of one ``device`` module into a function of
another ``device`` module, from the moment the button is released until the
hall's answer is marked delivered. Prints the modules in the order the
rating first reaches them, and each boundary (caller module -> callee
module) once: the figures in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import os
import queue
import sys
import tempfile
from types import FrameType
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from device import config as config_mod
from sim.hardware import make_sim_hardware

KEY = "path-trace-key"
#: Modules that are infrastructure rather than steps of a rating (logging helpers, type-only modules).
IGNORED = ("device.__init__",)
#: Helpers every step may use, not steps of their own: enums, clocks, the thread base, the key type, SQL set-up.
UTILITIES = ("device.levels", "device.clock", "device.worker", "device.config", "device.queue.schema")
#: The thank-you frame: a branch off the rating's path, not a hand the rating passes through.
SCREEN = ("device.screen", "device.view", "device.ui.", "device.drivers.display", "device.handlers.panel")


def on_path(module: str) -> bool:
    return not module.startswith(UTILITIES + SCREEN)


def module_of(frame: FrameType | None) -> str:
    if frame is None:
        return ""
    name = frame.f_globals.get("__name__", "")
    return name if isinstance(name, str) and name.startswith("device") and name not in IGNORED else ""


def trace(fn: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Run ``fn`` under a profiler; the ``device`` modules reached in order, and the boundaries crossed."""
    order: list[str] = []
    edges: list[tuple[str, str]] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = module_of(frame)
        if not callee:
            return
        if callee not in order:
            order.append(callee)
        caller = module_of(frame.f_back)
        if caller and caller != callee and (caller, callee) not in edges:
            edges.append((caller, callee))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return order, edges


def make_app(config: Any) -> tuple[Any, Any, Any]:
    """The app on simulated hardware (also for the code before the redesign, to compare)."""
    try:
        from device.app import App, http_transport
        from device.clock import Clocks
        from device.config import Secret
        from device.hardware import staff_request
    except ImportError:  # the code before the redesign: one App, clocks as arguments
        old_app: Any = importlib.import_module("device.app")
        old_transport: Any = importlib.import_module("device.queue.transport")
        hardware, factory = make_sim_hardware(config, queue.Queue(), old_app.new_session_request)
        app = old_app.App(config, hardware, old_transport.Secret(KEY), synced=lambda: True)
        return app, hardware, factory
    hardware, factory = make_sim_hardware(config, queue.Queue(), staff_request)
    app = App(config, hardware, Secret(KEY), clocks=Clocks(synced=lambda: True), make_transport=http_transport)
    return app, hardware, factory


def main() -> int:
    hall_module: Any = None
    for name in ("hall", "sim.hall", "sim.hall_server"):  # today's tree, then older ones (measured the same way)
        try:
            hall_module = importlib.import_module(name)
            break
        except ImportError:
            continue
    HallServer = hall_module.HallServer
    with tempfile.TemporaryDirectory() as tmp:
        hall = HallServer(os.path.join(tmp, "hall.db"), default_key=KEY)
        hall.start()
        config = config_mod.load(overrides=[
            f"outbox.path=\"{os.path.join(tmp, 'outbox.db')}\"", 'session.source="free"', "buttons.bounce_ms=0",
            f"upload.server=\"{hall.url}\"", 'device.id="TRACE-1"'])
        app, hardware, factory = make_app(config)
        app.pump()
        pin = factory.pin(config.buttons.pins[1])
        pin.drive_low()

        def one_rating() -> None:
            pin.drive_high()          # the release completes the press: the button callback runs here
            # The loop: step, commit, thanks (on the device, Loop.run on its own thread).
            getattr(app, "loop", app).pump()
            app.uploader.drain()      # the uploader's cycle: claim, POST, mark delivered

        order, edges = trace(one_rating)
        delivered = [e for e in hall.events("TRACE-1") if e["type"] == "rating"]
        app.outbox.close()
        hardware.close()
        hall.close()
    if len(delivered) != 1:
        print(f"rating_path: expected one delivered rating, the hall holds {len(delivered)}", file=sys.stderr)
        return 1
    steps = [m for m in order if on_path(m)]
    hops = [(a, b) for a, b in edges if on_path(a) and on_path(b)]
    print(f"device modules called: {len(order)}; distinct calls between them: {len(edges)}")
    print(f"the rating's path (helpers and the thank-you frame apart): {len(steps)} modules, "
          f"{len(hops)} boundaries")
    for caller, callee in hops:
        print(f"  {caller} -> {callee}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
