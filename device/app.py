"""The composition root of one build: outbox, uplink workers, screen, the loop and its table.

The :class:`~device.supervisor.Supervisor` makes an :class:`App` from a
configuration and the hardware, runs it, and makes a new one when the
technician commits settings that need it. Nothing here opens hardware:
the hardware comes in, built by the entry point's factory. :meth:`App.wire`
is the one place the loop's table is filled (the simulator's and the Pi's
paths both come through here): adding an output or a console request is a
line there, or an :class:`~device.hardware.Output` fitted to the hardware.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device import __version__
from device import state as st
from device.clock import Clocks
from device.console.keys import RotateDeviceKey, rotate_device_key
from device.handlers.assignment import InUse, assignment_path
from device.handlers.commands import (
    ButtonTest,
    CommitSettings,
    EraseSettings,
    UploadNow,
    commit_settings,
    upload_now,
)
from device.handlers.panel import Panel
from device.handlers.records import Records
from device.loop import Loop
from device.outputs import Outputs, led
from device.queue import client as client_mod
from device.queue.damage import summary
from device.queue.hall import HallLink, load_assignment
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from device.records import RecordFactory
from device.screen import Screen
from device.ui import care

if TYPE_CHECKING:
    from device.config import Config, Secret
    from device.hardware import Hardware

logger = logging.getLogger(__name__)

#: ``(config, key, timeout_s) -> transport``: how the app reaches the hall server.
TransportFactory = Callable[["Config", "Secret", float], Any]


def http_transport(config: Config, key: Secret, timeout: float) -> HttpTransport:
    """The real transport: signed HTTP(S) to ``upload.server``, with the signature ``upload.signature`` names."""
    return client_mod.for_config(config, key, timeout)


class UplinkWorkers:
    """The uploader and the hall link, as the loop's handlers see them.

    Every method only hands a request to a worker's own thread or reads a
    published snapshot: the loop never writes a worker's state.
    """

    def __init__(self, uploader: Uploader, hall_link: HallLink, key: Secret,
                 make_transport: TransportFactory) -> None:
        self.uploader = uploader
        self.hall_link = hall_link
        self.key = key
        self.make_transport = make_transport
        self.started = False
        #: Signing with the device's own key pair (``ed25519``): no shared key needed.
        self.own_key = getattr(uploader.transport, "algorithm", "") == "ed25519"
        #: The loop wakes the uploader straight after each commit: no hop through this object.
        self.wake = uploader.wake

    @property
    def has_key(self) -> bool:
        return bool(self.key) or self.own_key

    def start(self) -> None:
        if not self.has_key:
            logger.warning("no device key provisioned: ratings are kept but not uploaded")
            return
        if not self.started:
            self.started = True
            self.uploader.start()
            self.hall_link.start()

    def stop(self) -> None:
        self.hall_link.stop(timeout=2)
        self.uploader.stop(timeout=5)


    def retry_rejected(self) -> None:
        self.uploader.retry_rejected()

    def reconfigure(self, config: Config, key: Secret | None) -> None:
        if key is not None:
            self.key = key
        key = self.key
        transport = self.make_transport(config, key, config.upload.timeout_s)
        self.own_key = getattr(transport, "algorithm", "") == "ed25519"
        self.uploader.reconfigure(transport=transport, device_id=config.device.id)
        self.hall_link.reconfigure(transport=self.make_transport(config, key, HallLink.POLL_WAIT_S + 10),
                                   device_id=config.device.id)
        self.start()
        self.uploader.wake(force=True)

    def offline(self) -> bool:
        """For the idle screen's mark: not reaching the hall, refused by it, or no key to try."""
        status = self.uploader.status
        return status.online is False or bool(status.fault) or not self.has_key

    def faults(self) -> list[str]:
        """The uplink's faults (offline, auth, storage, dead letters, clock), from its snapshot."""
        faults = [] if self.has_key else ["no_device_key"]
        faults += [f for f in self.uploader.status.faults if f != "no_device_key"]
        return faults + [f for f in self.hall_link.status.faults if f not in faults]

    def last_upload_at(self) -> str:
        return self.uploader.status.last_upload_at


class App:
    """The device's parts for one configuration.

    Args:
        config: the committed :class:`~device.config.Config`.
        hardware: the :class:`~device.hardware.Hardware` (buttons feed ``hardware.events``).
        key: the device key.
        clocks: the :class:`~device.clock.Clocks` everything reads.
        make_transport: how to reach the hall server (tests pass their own).
        on_commit: told of each configuration committed over the console (the supervisor's, on this thread).

    Raises:
        StorageError: the outbox cannot be opened.
    """

    def __init__(self, config: Config, hardware: Hardware, key: Secret, *, clocks: Clocks | None = None,
                 make_transport: TransportFactory = http_transport,
                 on_commit: Callable[[Config], None] = lambda config: None) -> None:
        self.config = config
        self.hardware = hardware
        self.clocks = clocks = clocks or Clocks()
        clocks.max_disagreement_s = config.clock.max_disagreement_s
        self.events = hardware.events
        self.outbox = Outbox(config.outbox.path, max_events=config.outbox.max_events, clock=clocks.monotonic,
                             min_free_bytes=config.outbox.min_free_mb * 1024 * 1024,
                             device_id=config.device.id, window_no=config.device.window_no, clocks=clocks)
        try:
            self.uploader = Uploader(
                self.outbox, make_transport(config, key, config.upload.timeout_s), config.device.id,
                batch_size=config.upload.batch_size, backoff_min_s=config.upload.backoff_min_s,
                backoff_max_s=config.upload.backoff_max_s, heartbeat_s=config.upload.heartbeat_s,
                retain_days=config.outbox.retain_days, clocks=clocks, extra_faults=self._extra_faults,
                heartbeat_fields=self._heartbeat_fields)
            # The hall server's assignment wins over the configured identity; the
            # last one is kept beside the outbox for a reboot without network.
            path = assignment_path(config)
            kept = load_assignment(path)
            self.hall_link = HallLink(
                make_transport(config, key, HallLink.POLL_WAIT_S + 10), config.device.id, self.events,
                hall_mode=config.session.source == "hall", etag=kept.etag if kept else "", clocks=clocks)
            self.uplink = UplinkWorkers(self.uploader, self.hall_link, key, make_transport)
            self.screen = Screen(hardware.display, hardware.size, care.CareConfig())
            self.loop = Loop(self.events, clocks)
            self.in_use = InUse(self.loop, config, hardware.size, path=path,
                                reconfigure_uplink=self.uplink.reconfigure)
            if kept is not None:
                self.in_use.apply(kept, save=False)
            self.records = Records(self.loop, self.outbox, RecordFactory(clocks), clocks, self.in_use,
                                   self.uploader.wake)
            self.panel = Panel(self.loop, self.screen, self.in_use, self.outbox, clocks,
                               offline=self.uplink.offline, service_info=self.service_lines)
            self.button_test = ButtonTest(self.loop)
            # Voice, beep and status LED (issue 19), on threads of their own; handlers of Say and Beep.
            self.outputs = Outputs(config, hardware, clocks)
            self.wire(on_commit)
            self.records.recover_open_session()
        except BaseException:
            self.outbox.close()
            raise

    def wire(self, on_commit: Callable[[Config], None]) -> None:
        """Fill the loop's table: every input and effect it does not step, and who handles it.

        Outputs (the panel here; a speaker, buzzer or LED where ``hardware`` has one)
        are handlers of effects, added the same way.
        """
        loop = self.loop
        for part in (self.in_use, self.records, self.panel, self.button_test):
            part.register(loop)
        for output in self.hardware.outputs():
            output.register(loop)
        self.outputs.register(loop.register)
        loop.register(UploadNow, upload_now(self.uplink.retry_rejected, self.uplink.wake))
        loop.register(CommitSettings, commit_settings(self.in_use.reconfigure, on_commit))
        loop.register(EraseSettings, self.erase)
        loop.register(RotateDeviceKey, rotate_device_key)
        loop.prepare(st.SessionOpened, self.vet_session)

    def vet_session(self, event: st.SessionOpened) -> st.SessionVetted:
        """What the state machine decides a hall session on: recorded already? can the panel show its QR?"""
        return st.SessionVetted(event, recorded=self.outbox.has_session(event.session_id),
                                qr_fits=self.in_use.qr_fits(event.qr_url))

    def erase(self, request: EraseSettings) -> None:
        """``FactoryReset`` on the loop's thread: the settings and key, then the hall's assignment."""
        request.erase()
        self.in_use.forget()

    def service_lines(self) -> tuple[str, ...]:
        """The technician's screen: identity, addresses, version, backlog; never secrets."""
        last = self.uplink.last_upload_at()
        return (f"ID {self.in_use.config.device.id}", f"IP {local_address()}", f"固件 {__version__}",
                f"待传 {self.outbox.waiting()}", f"上传 {last[11:19] or '无'}")

    def _heartbeat_fields(self) -> dict[str, Any]:
        """Counters of the device itself for the heartbeat (read from published snapshots)."""
        return {"ignored_presses": self.loop.status.ignored_presses,
                "noise_pulses": self.hardware.buttons.noise_pulses,
                "storage_damage": self.outbox.damage()}

    def _extra_faults(self) -> list[str]:
        """Faults of the device itself for the heartbeat (read from published snapshots)."""
        status = self.loop.status
        faults = [] if self.uplink.has_key else ["no_device_key"]
        damage = summary(self.outbox.damage())
        if damage:
            faults.append("storage_damage: " + damage[:120])
        faults += self.hall_link.status.faults  # session storms, answers that do not verify
        if status.display_fault:
            faults.append("display: " + status.display_fault[:120])
        if status.assignment_fault:
            faults.append("assignment: " + status.assignment_fault[:120])
        faults += [f[:160] for f in self.outputs.faults()]  # a speaker that cannot be heard: a fault, not a stop
        return faults

    def led_status(self) -> str:
        """What the status LED shows (read on its thread, from published snapshots)."""
        if self._extra_faults():
            return led.FAULT
        if self.uplink.offline() and self.outbox.waiting():
            return led.OFFLINE
        return led.READY

    def run(self, stop: threading.Event) -> None:
        """Start the uplink, run the loop until ``stop``, then stop everything."""
        self.uplink.start()
        self.outputs.start(self.led_status)
        try:
            self.loop.run(stop)
        finally:
            self.close()

    def close(self) -> None:
        self.outputs.stop()
        self.uplink.stop()
        self.outbox.close()

    # --- for tests and tools -----------------------------------------------------

    def pump(self) -> None:
        """Handle every input already queued, then redraw."""
        self.loop.pump()

    @property
    def model(self) -> Any:
        """The screen model on the panel."""
        return self.screen.model


def local_address() -> str:
    """IPv4 addresses of the network interfaces other than loopback (Linux ioctl)."""
    addresses = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:  # SIOCGIFADDR fails for interfaces without an address
                continue
            addresses.append(socket.inet_ntoa(packed[20:24]))
    return " ".join(addresses) or "-"
