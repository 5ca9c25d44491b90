"""One way to replace a file and one way to move one, both durable across a power cut.

* :func:`write_atomic`: a temporary file in the same folder (mode set before
  the first byte, so a secret is never readable by others), ``fsync``,
  ``os.replace``, then ``fsync`` of the folder so the rename itself is on
  disk. A power cut leaves the old content or the new, never a mix.
* :func:`move`: ``os.replace`` within a filesystem; across filesystems
  (``EXDEV`` only, every other error is raised) a copy beside the
  destination, flushed, renamed into place, the destination's folder
  flushed, and only then the source removed (the caller may scrub it).
  A power cut leaves the source whole, or the destination whole.
* :func:`fsync_dir`: flush a folder's entries.

Every caller (settings, the key file, the session marker, the assignment,
the outbox's companions) goes through these, so the durability rules are
written once. Errors leave as :class:`OSError`; callers say what the file was.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable

StrPath = str | os.PathLike[str]

__all__ = ["fsync_dir", "move", "remove", "write_atomic"]


def fsync_dir(path: StrPath) -> None:
    """Flush a folder's entries (a rename or an unlink is only durable once its folder is).

    Raises:
        OSError: the folder cannot be opened or flushed.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder(path: StrPath) -> str:
    return os.path.dirname(os.path.abspath(path))


def _write_flushed(fd: int, data: bytes, mode: int) -> None:
    """All of ``data`` to ``fd`` with ``mode``, then flushed to the disk."""
    os.fchmod(fd, mode)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def write_flushed(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` in place (replaced if there) and flush it: a staged file whose
    rename is the commit point of something larger (the settings and the key, see device/settings.py)."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        _write_flushed(fd, data, mode)
    finally:
        os.close(fd)


def write_atomic(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old content or the new.

    Args:
        path: the file to replace; its folder must exist.
        data: the new content.
        mode: permission bits of the new file, set before any byte is written.

    Raises:
        OSError: a step failed; the old file is intact and no temporary file is left.
    """
    path = os.fspath(path)
    folder = _folder(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            # The content must be on disk before the name points at it.
            _write_flushed(fd, data, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def move(src: StrPath, dst: StrPath, mode: int = 0o600,
         remove_source: Callable[[str], object] = os.unlink) -> None:
    """Move ``src`` to ``dst`` durably, across filesystems if need be.

    Args:
        src: the file to move.
        dst: where it goes (replaced if there); its folder must exist.
        mode: permission bits of a copy made across filesystems.
        remove_source: how the source is removed after a copy (a secret's is scrubbed).

    Raises:
        OSError: the move failed; the source is then still there.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = f"{dst}.moving"
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, mode)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dst)
        except BaseException:
            remove(tmp)
            raise
        fsync_dir(_folder(dst))
        remove_source(src)
        fsync_dir(_folder(src))
        return
    fsync_dir(_folder(dst))


def remove(path: StrPath) -> bool:
    """Delete a file if it is there; True if it was. Other errors are raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
