"""``device.files``: the one atomic write and the one move, used by settings, the outbox and the assignment."""

import errno
import os
import stat
import tempfile

import pytest

from device import files
from device.queue import hall, repair
from device.queue.hall import Assignment

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def synced(monkeypatch):
    """The folders flushed, in order (the real flush still runs)."""
    seen = []
    real = files.fsync_dir

    def record(path):
        seen.append(os.path.abspath(path))
        real(path)
    monkeypatch.setattr(files, "fsync_dir", record)
    return seen


def test_write_atomic_replaces_the_file_private_from_the_first_byte_and_flushes_its_folder(tmp_path, synced):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    files.write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert synced == [str(tmp_path)] and os.listdir(tmp_path) == ["f"]


def test_write_atomic_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def no_room(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def test_the_assignment_is_written_the_same_way_folder_flushed_included(tmp_path, synced):
    path = tmp_path / "assignment.json"
    hall.save_assignment(path, Assignment(window_no="03", window_name="三号", staff_no="9", staff_name="李四",
                                          staff_dept="", qr_url="", reasons=(), reasons_version=""))
    loaded = hall.load_assignment(path)
    assert loaded is not None and loaded.staff_name == "李四"
    assert synced == [str(tmp_path)] and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def _exdev_once(monkeypatch):
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((os.fspath(src), os.fspath(dst)))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_move_across_filesystems_copies_flushes_renames_then_removes_the_source(tmp_path, monkeypatch, synced):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src, dst = tmp_path / "a" / "x", tmp_path / "b" / "x"
    src.write_bytes(b"data")
    calls = _exdev_once(monkeypatch)
    removed = []

    def remove(path):
        removed.append(path)
        os.unlink(path)

    files.move(src, dst, remove_source=remove)
    assert dst.read_bytes() == b"data" and not src.exists() and removed == [str(src)]
    assert calls[1] == (str(dst) + ".moving", str(dst))
    assert synced == [str(tmp_path / "b"), str(tmp_path / "a")]    # the copy durable before the source goes
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o600


def test_a_move_that_fails_for_another_reason_is_not_a_copy(tmp_path, monkeypatch):
    src, dst = tmp_path / "x", tmp_path / "y"
    src.write_bytes(b"data")

    def refuse(a, b):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        files.move(src, dst)
    assert src.read_bytes() == b"data" and not dst.exists()


def test_the_outbox_and_the_settings_move_through_the_same_function(tmp_path, monkeypatch):
    moved = []
    real = files.move

    def move(*a, **k):
        moved.append(a[:2])
        return real(*a, **k)

    monkeypatch.setattr(files, "move", move)
    (tmp_path / "x").write_bytes(b"1")
    repair._move_file(str(tmp_path / "x"), str(tmp_path / "sub" / "x"))
    from device import settings
    (tmp_path / "k").write_bytes(b"2")
    settings._rename(str(tmp_path / "k"), str(tmp_path / "k2"))
    assert [os.path.basename(str(b)) for _, b in moved] == ["x", "k2"]


def test_a_real_move_to_another_filesystem_when_there_is_one(tmp_path):
    other = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if other is None or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    folder = tempfile.mkdtemp(dir=other)
    try:
        src = tmp_path / "x"
        src.write_bytes(b"data" * 1000)
        files.move(src, os.path.join(folder, "x"))
        assert not src.exists()
        with open(os.path.join(folder, "x"), "rb") as f:
            assert f.read() == b"data" * 1000
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
