"""Apply a profile: set every value, commit, read back, run the self-tests, report.

Whatever happens after the first command (success, a refusal, a timeout,
Ctrl-C), the console is sent ``Lock`` before the run ends, so a device is
never left open to changes; and a PIN given is always proved with ``Auth``,
even to a console that is already open, so a wrong PIN is refused there too.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any

from device import config as config_mod
from device.errors import ProvisionError
from provision import EXIT_OK, EXIT_PIN, EXIT_READBACK, EXIT_REJECTED, EXIT_TEST, EXIT_TIMEOUT, EXIT_WRONG_DEVICE
from provision.session import DeviceSession

#: How long the closing ``Lock`` may take (short: the run is ending, perhaps on Ctrl-C).
LOCK_TIMEOUT_S = 3.0


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, (tuple, list)):
        return isinstance(got, list) and len(got) == len(expected) and all(
            _same(e, g) for e, g in zip(expected, got, strict=True))
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and float(expected) == float(got)
    return bool(expected == got)


def lock(session: DeviceSession) -> bool:
    """Send ``Lock`` and wait briefly for its answer; True if the console said it is locked.

    Never raises: it runs on the way out of every run, also after a timeout or Ctrl-C.
    """
    try:
        answer = session.ask("Lock", timeout=LOCK_TIMEOUT_S)
    except (ProvisionError, OSError, KeyboardInterrupt):
        return False
    return bool(answer.get("ok"))


def provision(session: DeviceSession, values: Mapping[str, Any], key: str | None, *, pin: str | None = None,
              new_pin: str | None = None, expect_device: str | None = None, tests: bool = True,
              restart: bool = False, out: Callable[[str], None] = print, wifi: tuple[str, str] | None = None,
              info: dict[str, Any] | None = None, taken: Mapping[str, str] | None = None) -> int:
    """Apply, commit, read back and test; print the report through ``out``; always leave the console locked.

    Args:
        wifi: ``(ssid, password)`` to join (the password is never printed).
        info: filled with what was learnt of the device: ``device_id``, ``firmware``,
            ``public_key``, ``fingerprint``, ``algorithm`` (when the device has ``PublicKey``).
        taken: ``{device id: window}`` of other windows of the batch: a device that already
            carries one of those ids is refused (plugged in twice by mistake).

    Returns:
        0 when everything passed.

    Raises:
        ProvisionError: the first thing that went wrong, with its exit code.
    """
    learnt: dict[str, Any] = info if info is not None else {}
    try:
        return _provision(session, values, key, pin=pin, new_pin=new_pin, expect_device=expect_device, tests=tests,
                          restart=restart, out=out, wifi=wifi, info=learnt, taken=taken or {})
    finally:
        # Every way out: success, refusal, timeout, Ctrl-C. A restarted device starts locked anyway.
        if not learnt.get("restarted") and not lock(session):
            out("could not confirm that the console is locked: send Lock, or restart the device")


def _quoted(text: str) -> str:
    """``text`` in single quotes as a shell (and the console's ``Wifi``) reads it back."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def prove_pin(session: DeviceSession, status: Mapping[str, Any], pin: str | None) -> None:
    """Prove the PIN given, even to a console that is already open; refuse a PIN-less run of a set device.

    A console left open (by an earlier session) is no proof: whoever runs the
    tool must know the PIN, unless the technician is physically present (buttons
    held at boot).

    Raises:
        ProvisionError: ``EXIT_PIN``.
    """
    if not status.get("pin_set"):
        return
    if not pin:
        auth = session.ask("Auth")
        if auth.get("presence"):
            return
        raise ProvisionError(EXIT_PIN, "the device has a PIN: give --pin (or set EVALUATOR_PIN)")
    answer = session.ask(f"Auth {pin}", what="Auth")
    if not answer.get("ok"):
        raise ProvisionError(EXIT_PIN, f"PIN refused: {answer.get('message', answer.get('error'))}")


def public_key(session: DeviceSession) -> dict[str, Any]:
    """The device's ``PublicKey`` answer (interface: ``algorithm``, ``public_key``, ``fingerprint``).

    Raises:
        ProvisionError: ``EXIT_REJECTED`` when the device has no such command
            (older firmware) or no key, saying so.
    """
    answer = session.ask("PublicKey")
    if answer.get("ok") and answer.get("public_key") and answer.get("fingerprint"):
        return {k: answer.get(k) for k in ("algorithm", "public_key", "fingerprint")}
    if answer.get("error") == "unknown_command":
        raise ProvisionError(EXIT_REJECTED, "the device's firmware has no PublicKey command: update it, or use "
                             "shared keys (--hmac-keys) for this hall")
    raise ProvisionError(EXIT_REJECTED, f"the device shows no public key: {answer.get('message', answer)}")


def _provision(session: DeviceSession, values: Mapping[str, Any], key: str | None, *, pin: str | None,
               new_pin: str | None, expect_device: str | None, tests: bool, restart: bool,
               out: Callable[[str], None], wifi: tuple[str, str] | None, info: dict[str, Any],
               taken: Mapping[str, str]) -> int:
    session.sync()
    status = session.ask("Status")
    if not status.get("ok") or "device_id" not in status:
        raise ProvisionError(EXIT_TIMEOUT, "the device did not answer Status as a Window Evaluator console")
    found = status["device_id"]
    info.update(device_id=found, firmware=status.get("firmware", ""))
    if expect_device and found != expect_device:
        raise ProvisionError(EXIT_WRONG_DEVICE, f"wrong device: expected {expect_device}, found {found}")
    if found in taken and found != values.get("device.id"):
        raise ProvisionError(EXIT_WRONG_DEVICE, f"this device is already {found} (window {taken[found]}): "
                             "plug in a device not yet provisioned")
    out(f"device {found}, firmware {status.get('firmware', '?')}")

    prove_pin(session, status, pin)

    session.ask("Discard")
    for full_key, value in values.items():
        wire = config_mod.format_value(full_key, value)
        answer = session.ask(f"Set {full_key} {wire}", what=f"Set {full_key}")
        if not answer.get("ok"):
            session.ask("Discard")
            if answer.get("error") == "not_authorized":
                raise ProvisionError(EXIT_PIN, f"the device refused the change: {answer.get('message')}")
            raise ProvisionError(EXIT_REJECTED, f"the device rejected {full_key}: {answer.get('message')}")
    if key:
        answer = session.ask(f"DeviceKey {key}", what="DeviceKey")
        if not answer.get("ok"):
            session.ask("Discard")
            raise ProvisionError(EXIT_REJECTED, f"the device rejected the device key: {answer.get('message')}")

    commit = session.ask("Commit")
    if not commit.get("ok"):
        problems = "".join(f"\n  {p['key']}: {p['message']}" for p in commit.get("problems", []))
        session.ask("Discard")
        raise ProvisionError(EXIT_REJECTED, f"commit refused: {commit.get('message')}{problems}")

    mismatches = []
    out("")
    out("read back:")
    for full_key, value in values.items():
        answer = session.ask(f"Get {full_key}")
        got = answer.get("value")
        good = answer.get("ok") and _same(value, got)
        out(f"  {'ok  ' if good else 'DIFF'} {full_key} = {json.dumps(got, ensure_ascii=False)}")
        if not good:
            sent = config_mod.format_value(full_key, value)
            mismatches.append(f"{full_key}: sent {json.dumps(sent, ensure_ascii=False)}, "
                              f"device has {json.dumps(got, ensure_ascii=False)}")
    if key:
        answer = session.ask("DeviceKey")
        good = bool(answer.get("ok") and answer.get("set"))
        out(f"  {'ok  ' if good else 'DIFF'} device key: {'set' if good else 'NOT set'} (never shown)")
        if not good:
            mismatches.append("device key: the device reports none")

    if wifi is not None:
        ssid, password = wifi
        answer = session.ask("Wifi " + " ".join(_quoted(t) for t in ((ssid, password) if password else (ssid,))),
                             what="Wifi",
                             timeout=max(session.timeout, 60.0))
        if not answer.get("ok"):
            raise ProvisionError(EXIT_REJECTED, f"Wi-Fi {ssid!r} not joined: {answer.get('message')}")
        out(f"  Wi-Fi: joined {ssid}, IP {answer.get('ip', '?')}, signal {answer.get('signal', '?')}")

    pin_note = "unchanged"
    if new_pin or (pin and not status.get("pin_set")):
        answer = session.ask(f"Pin {new_pin or pin}", what="Pin")
        if not answer.get("ok"):
            raise ProvisionError(EXIT_REJECTED, f"the device refused the new PIN: {answer.get('message')}")
        pin_note = "changed" if status.get("pin_set") else "set (the device was factory-new)"
    out(f"  PIN: {pin_note}")
    if mismatches:
        raise ProvisionError(EXIT_READBACK, "values read back differ:\n  " + "\n  ".join(mismatches))

    failed = []
    if tests:
        out("")
        out("self-tests:")
        display = session.ask("Test display")
        out(f"  display: {'pattern shown, check the screen' if display.get('ok') else display.get('message')}")
        if not display.get("ok"):
            failed.append("display")
        uplink = session.ask("Test uplink", timeout=max(session.timeout, 30.0))
        if uplink.get("ok"):
            out(f"  uplink: {uplink.get('server', '')} answered {uplink.get('status')} "
                f"in {uplink.get('elapsed_ms', '?')} ms")
        else:
            out(f"  uplink: FAILED: {uplink.get('message', uplink.get('error'))}")
            failed.append("uplink")

    try:
        info.update(public_key(session))
        out(f"  public key: {info['fingerprint']} ({info.get('algorithm') or '?'})")
    except ProvisionError as e:
        info["public_key_error"] = str(e)
        out(f"  public key: none ({e})")

    restart_needed = commit.get("restart_needed") or []
    out("")
    if restart_needed:
        if restart:
            session.ask("Restart")
            info["restarted"] = True
            out(f"restarted the device to apply {', '.join(restart_needed)}")
        else:
            out(f"restart needed to apply {', '.join(restart_needed)} (send Restart, or use --restart)")
    if failed:
        raise ProvisionError(EXIT_TEST, f"settings committed, but self-tests failed: {', '.join(failed)}")
    out(f"provisioned {found}: {len(values)} settings{' and the device key' if key else ''} committed")
    return EXIT_OK
