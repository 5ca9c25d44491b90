"""Self-tests: ``Test buttons [timeout_s]``, ``Test display``, ``Test uplink``.

The uplink test needs no authorisation (it changes nothing); the button and
display tests do, as they take over the buttons and the screen for a while.
The button test answers a line per button as it is pressed. The uplink test
is the device's (:meth:`~device.control.DeviceControl.test_uplink`, which
uses :func:`device.queue.health.uplink_check`, built on the wire contract).
"""

from __future__ import annotations

import logging
from typing import Any

from device.console.commands import Answer, Command, Context
from device.errors import CommandRefused

logger = logging.getLogger(__name__)

#: How long ``Test buttons`` waits for each press by default.
BUTTON_TIMEOUT_S = 30.0
#: The longest wait per button a technician may ask for.
BUTTON_TIMEOUT_MAX_S = 600.0


def _test(ctx: Context, arg: str) -> Answer:
    what, _, rest = arg.partition(" ")
    what = what.lower()
    if what == "uplink":
        return _test_uplink(ctx)
    if what not in ("buttons", "display"):
        raise CommandRefused("missing_value", "use: Test buttons|display|uplink")
    ctx.auth.require()
    if what == "display":
        info = dict(ctx.device.test_display() or {})
        return {"ok": True, "test": "display", "result": "shown", **info,
                "message": "check the test pattern on the screen"}
    timeout = ctx.button_timeout_s
    if rest.strip():
        try:
            timeout = float(rest)
        except ValueError:
            raise CommandRefused("invalid_value", "the button test's timeout is a number of seconds") from None
        if not 0 < timeout <= BUTTON_TIMEOUT_MAX_S:
            raise CommandRefused("invalid_value", f"the button test's timeout is 0 to {BUTTON_TIMEOUT_MAX_S:g} seconds")
    return _test_buttons(ctx, timeout)


def _test_uplink(ctx: Context) -> Answer:
    try:
        result = dict(ctx.device.test_uplink() or {})
    except Exception as e:
        logger.exception("uplink test failed")
        result = {"ok": False, "message": f"the uplink test failed inside the device ({type(e).__name__})"}
    result.setdefault("ok", False)
    if not result["ok"]:
        result.setdefault("error", "uplink_failed")
        result.setdefault("message", "the uplink test failed")
    return {**result, "test": "uplink"}


def _test_buttons(ctx: Context, timeout: float) -> Answer:
    device = ctx.device
    pins = device.current_config().buttons.pins
    ctx.send({"ok": True, "test": "buttons", "waiting_for": 1, "pin": pins[0], "timeout_s": timeout,
              "message": "press each rating button in turn, 1 (非常满意) to 5 (非常不满意)"})
    results: list[dict[str, Any]] = []
    device.button_test(True)
    try:
        for n in range(1, 6):
            got = device.wait_button(timeout)
            if got is None:
                return {"ok": False, "error": "timeout", "test": "buttons", "done": True,
                        "message": f"no press of button {n} (GPIO {pins[n - 1]}) within {timeout:g} s",
                        "buttons": results}
            entry = {"button": n, "pin": pins[n - 1], "pressed": got, "ok": got == n}
            results.append(entry)
            line: Answer = {"ok": got == n, "test": "buttons", **entry}
            if got != n:
                line.update(error="wrong_button",
                            message=f"expected button {n} (GPIO {pins[n - 1]}), got button {got}")
            if n < 5:
                line.update(waiting_for=n + 1, next_pin=pins[n])
            ctx.send(line)
    finally:
        device.button_test(False)
    passed = all(r["ok"] for r in results)
    answer: Answer = {"ok": passed, "test": "buttons", "done": True, "result": "pass" if passed else "fail",
                      "buttons": results}
    if not passed:
        answer.update(error="test_failed", message="some buttons did not answer as expected")
    return answer


COMMANDS = {
    # Authorisation is checked per test: the uplink test changes nothing.
    "test": Command(_test, log_argument=True, name="Test", summary="self-tests: the buttons, the display, the uplink",
                    usage="Test buttons [timeout_s] | Test display | Test uplink", example="Test uplink"),
}
