"""A loopback TCP link between the device and the hall server that can be cut.

The device talks to the link's address; the link forwards bytes to the real
server. ``down()`` closes every open connection and refuses new ones (it
accepts and closes at once, as a dead route would reset), so the device's
real HTTP stack sees real connection failures.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from typing import cast

logger = logging.getLogger(__name__)


class NetworkLink:
    """Forwards ``127.0.0.1:<port>`` to ``(target_host, target_port)``."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = self._listener.getsockname()
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="network-link", daemon=True)
        self._thread.start()

    @property
    def is_up(self) -> bool:
        """Whether the link forwards (``up()``) or refuses (``down()``)."""
        return self._up.is_set()

    def up(self) -> None:
        """Forward new connections again."""
        self._up.set()
        logger.info("network up")

    def down(self) -> None:
        """Cut every open connection and refuse new ones until ``up()``."""
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            _close(sock)
        logger.info("network down")

    def close(self) -> None:
        """Cut everything and stop listening."""
        self._closed = True
        self.down()
        _close(self._listener)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in sel.select(timeout=1.0):
                    data = cast(socket.socket, key.fileobj).recv(65536)
                    if not data:
                        return
                    cast(socket.socket, key.data).sendall(data)
                if not self._up.is_set():
                    return
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            _close(a)
            _close(b)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
