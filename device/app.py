"""One build of the device: outbox, uplink workers, screen and loop, wired together.

The :class:`~device.supervisor.Supervisor` makes an :class:`App` from a
configuration and the hardware, runs it, and makes a new one when the
technician commits settings that need it. Nothing here opens hardware:
the hardware comes in, built by the entry point's factory.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device import __version__
from device.clock import Clocks
from device.loop import Loop
from device.outputs import Outputs
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
    """The real transport: signed HTTP(S) to ``upload.server``."""
    u = config.upload
    return HttpTransport(u.server, config.device.id, key, timeout=timeout, verify=u.ca_bundle or u.verify_tls,
                         insecure_http=u.insecure_http)


class UplinkWorkers:
    """The uploader and the hall link, as the loop sees them (:class:`~device.loop.Uplink`).

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
        #: The loop wakes the uploader straight after each commit: no hop through this object.
        self.wake = uploader.wake

    @property
    def has_key(self) -> bool:
        return bool(self.key)

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
        self.uploader.reconfigure(transport=self.make_transport(config, key, config.upload.timeout_s),
                                  device_id=config.device.id)
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

    Raises:
        StorageError: the outbox cannot be opened.
    """

    def __init__(self, config: Config, hardware: Hardware, key: Secret, *, clocks: Clocks | None = None,
                 make_transport: TransportFactory = http_transport) -> None:
        self.config = config
        self.hardware = hardware
        self.clocks = clocks = clocks or Clocks()
        self.events = hardware.events
        self.outbox = Outbox(config.outbox.path, max_events=config.outbox.max_events, clock=clocks.monotonic,
                             min_free_bytes=config.outbox.min_free_mb * 1024 * 1024)
        try:
            self.uploader = Uploader(
                self.outbox, make_transport(config, key, config.upload.timeout_s), config.device.id,
                batch_size=config.upload.batch_size, backoff_min_s=config.upload.backoff_min_s,
                backoff_max_s=config.upload.backoff_max_s, heartbeat_s=config.upload.heartbeat_s,
                retain_days=config.outbox.retain_days, clocks=clocks, extra_faults=self._extra_faults,
                heartbeat_fields=self._heartbeat_fields)
            # The hall server's assignment wins over the configured identity; the
            # last one is kept beside the outbox for a reboot without network.
            assignment_path = os.path.join(os.path.dirname(os.path.abspath(config.outbox.path)),
                                           "assignment.json")
            kept = load_assignment(assignment_path)
            self.hall_link = HallLink(
                make_transport(config, key, HallLink.POLL_WAIT_S + 10), config.device.id, self.events,
                hall_mode=config.session.source == "hall", etag=kept.etag if kept else "", clocks=clocks)
            self.uplink = UplinkWorkers(self.uploader, self.hall_link, key, make_transport)
            self.screen = Screen(hardware.display, hardware.size, care.CareConfig())
            self.loop = Loop(config, self.events, self.outbox, self.screen, RecordFactory(clocks), clocks,
                             self.uplink, assignment=kept, assignment_path=assignment_path,
                             service_info=lambda: (f"IP {local_address()}", f"固件 {__version__}"))
            # access (issue 19): voice, beep and status LED, on threads of their own.
            self.outputs = Outputs(config, hardware, clocks)
            self.outputs.register(self.loop.register)
        except BaseException:
            self.outbox.close()
            raise

    def _heartbeat_fields(self) -> dict[str, Any]:
        """Counters of the device itself for the heartbeat (read from published snapshots)."""
        return {"ignored_presses": self.loop.status.ignored_presses,
                "noise_pulses": self.hardware.buttons.noise_pulses,
                "storage_damage": self.outbox.damage()}

    def _extra_faults(self) -> list[str]:
        """Faults of the device itself for the heartbeat (read from published snapshots)."""
        from device.queue.damage import summary

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
        faults += [f[:160] for f in self.outputs.faults()]  # access: a speaker that cannot be heard
        return faults

    def led_status(self) -> str:
        """access: what the status LED shows (read on its thread, from published snapshots)."""
        from device.outputs import led

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
    import fcntl
    import socket
    import struct

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
