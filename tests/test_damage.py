"""The damage matrix (``make damage``), each case end to end, its outcome asserted.

One crash image is made for the module: the simulator rates six times with
the network up (the hall has them), six times with it down (pending), and is
killed with SIGKILL. Each case copies it, damages it as it says, and runs the
device on it (supervisor, simulated pins, the console on a real pty, the
stand-in hall on loopback). The case's checks are in ``tools/damage_rig.py``
(``check_storage_outcome``) and ``tools/damage.py``: nothing lost silently
(every rating kept before the damage is at the hall, or counted as lost or
set aside in ``Status`` and in ``evaluator-verify``), no stall (two ratings
given afterwards are thanked and delivered), the console answers, and no
``seq`` is used twice. Here each case must pass, and a few outcomes are
pinned down further.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import damage
import damage_cases
import damage_copies
import damage_rig

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return damage_rig.crash_image(str(tmp_path_factory.mktemp("image")))


@pytest.fixture
def run(tmp_path, image):
    def run_(name):
        out = damage.run_case(name, str(tmp_path), image)
        assert out.ok, out.line()
        assert out.answered >= 1, "the console was not asked"
        return out
    return run_


@pytest.mark.parametrize("name", sorted(damage.STORAGE_CASES))
def test_damaged_storage_is_counted_never_silent(run, image, name):
    out = run(name)
    assert out.kept == len(image.kept) >= 12 and out.new and min(out.new) > max(image.kept)
    assert out.at_hall + out.counted == out.kept
    if out.counted:
        assert out.verify, "evaluator-verify reports the damage"


def test_a_lost_wal_counts_the_pending_as_lost_and_the_delivered_apart(run, image):
    out = run("wal_deleted")
    n = len(image.kept)
    assert (out.damage["lost"], out.damage["lost_delivered"], out.damage["reused_seq_prevented"]) == (6, n - 6, n)
    assert out.new == [n + 2, n + 3]                  # seq n + 1 is the gap event telling the hall of the loss
    assert "6 lost" in out.verify


def test_a_flipped_header_shows_recovery_then_goes_on_with_everything(run, image):
    out = run("header_flipped")
    assert out.damage["replaced"] == 1 and out.counted == 0 and out.at_hall == len(image.kept)


def test_a_poison_row_is_set_aside_and_the_rows_behind_it_delivered(run, image):
    out = run("poison_row")
    n = len(image.kept)
    assert out.damage["set_aside"] == 1 and out.at_hall == n - 1 and f"1 set aside (seq {n})" in out.verify


@pytest.mark.parametrize("name", sorted(damage_cases.OTHER_CASES))
def test_other_cases(run, name):
    out = run(name)
    if name.startswith("bad_"):
        assert any(note.startswith("Commit refused") for note in out.notes)
    if name == "enospc_tiny_fs" and not any(note.startswith("skipped") for note in out.notes):
        assert out.kept == out.at_hall == 4


def test_killed_key_commits_are_atomic_and_leave_no_key_behind(tmp_path):
    out = damage_cases.key_kills(str(tmp_path), kills=6, seed=1234)
    assert out.ok, out.line()


@pytest.mark.slow
def test_fifty_killed_key_commits_then_factory_reset(tmp_path):
    out = damage_cases.key_kills(str(tmp_path), kills=50)
    assert out.ok, out.line()


#: Thanked ratings each copy case cannot deliver any more (the rig reads them by id from the files and the hall).
COPY_LOSSES = {"row_flipped_checkpointed": 1, "row_flipped_wal": 1, "witness_wal_lost": 6, "foreign_folder": 6,
               "restored_online": 2, "restored_offline": 2, "cloned": 0}


@pytest.mark.parametrize("name", sorted(damage_copies.COPY_CASES))
def test_copies_and_flipped_bytes_never_brick_never_give_a_seq_twice_and_say_what_was_lost(run, name):
    out = run(name)
    m = out.matrix
    assert m["console up"] is True and m["rates again"] is True, out.line()
    assert m["thanked lost"] == COPY_LOSSES[name], out.line()
    if damage_copies.HALL_REFUSES_TAKEN_SEQS:
        assert m["seqs held twice"] == 0, out.line()
    if damage_copies.HALL_TAKES_GAPS and COPY_LOSSES[name]:
        assert m["gap at hall"].startswith("yes"), out.line()
    assert m["rest delivered in"].endswith(" s") and not m["rest delivered in"].startswith("not"), out.line()
