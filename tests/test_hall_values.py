"""Values from the hall are shown as they can be and never credit the wrong person (issue 16.6).

End to end: the stand-in hall serves the assignment, the device runs under
its supervisor on simulated pins, and what is asserted is what the hall
stores for each rating and what ``Status`` says.
"""

import json
import queue

import pytest
from test_supervisor import Rig, wait_for

from device import config as config_mod
from device.clock import Clocks
from device.handlers.assignment import InUse, clean_text
from device.loop import Loop
from device.queue.hall import Assignment
from device.records import Origin
from device.supervisor import RUNNING

pytestmark = pytest.mark.timeout(60)


def assignment(staff_no, staff_name, qr_url="https://hcp.example.org/w/08"):
    return {"window": {"no": "08", "name": "不动产登记"}, "staff": {"no": staff_no, "name": staff_name, "dept": ""},
            "qr_url": qr_url, "reasons_version": "v1", "reasons": []}


def ratings(hall):
    return [(e["staff_no"], e["staff_name"]) for e in hall.events() if e["type"] == "rating"]


def test_a_newline_in_the_halls_staff_name_becomes_a_space_and_the_new_person_is_credited(tmp_path, hall):
    hall.set_assignment(None, assignment("8802", "李四"))
    rig = Rig(tmp_path, hall)
    try:
        rig.wait_mode(RUNNING)
        assert wait_for(lambda: rig.tech("Status").get("staff") == "8802")
        rig.press(1)
        assert wait_for(lambda: ratings(hall) == [("8802", "李四")])
        # The next staff member, with a control character in the name; a rebuild fetches it at once.
        hall.set_assignment(None, assignment("8803", "王\n五"))
        rig.tech("Restart")
        assert wait_for(lambda: rig.tech("Status").get("staff") == "8803")
        status = rig.tech("Status")
        faults = [f["message"] for f in status["faults"] if f["code"] == "assignment"]
        assert faults and "control characters" in faults[0] and "staff.name" in faults[0], status["faults"]
        assert wait_for(lambda: type(getattr(rig.supervisor.app, "model", None)).__name__ == "IdleScreen")
        assert rig.supervisor.app is not None and rig.supervisor.app.model.staff_name == "王 五"
        rig.press(2)
        assert wait_for(lambda: len(ratings(hall)) == 2)
        assert ratings(hall) == [("8802", "李四"), ("8803", "王 五")]
        kept = json.loads((tmp_path / "data" / "assignment.json").read_text(encoding="utf-8"))
        assert kept["staff_no"] == "8803"
    finally:
        rig.close()


def test_an_assignment_that_cannot_be_applied_stops_crediting_the_staff_it_replaced(make_app):
    app, factory, _ = make_app('staff.no="0001"', 'staff.name="张三"')

    class Broken(Assignment):
        def apply_to(self, config):
            raise ValueError("nothing here can be shown")

    hall_says = Broken(**{**Assignment.from_json(assignment("8804", "赵六")).to_json(), "etag": ""})
    from device.queue.hall import AssignmentChanged
    from helpers import tap

    app.events.put(AssignmentChanged(hall_says))
    app.pump()
    tap(app, factory, 1)
    rating = next(e for e in app.outbox.events() if e["type"] == "rating")
    assert (rating["staff_no"], rating["staff_name"], rating["window_no"]) == ("", "", "01")
    assert "ratings carry the window only" in app.loop.status.assignment_fault
    assert "assignment: " + app.loop.status.assignment_fault[:120] in app._extra_faults()  # the heartbeat's


def test_control_characters_become_spaces():
    assert clean_text("王\n五\t\x1b[2J\x7f\u2028") == "王 五  [2J  "
    assert clean_text("欧阳 娜娜") == "欧阳 娜娜"


def test_every_replacement_is_reported(tmp_path):
    config = config_mod.load(overrides=[f"outbox.path=\"{tmp_path / 'o.db'}\""])
    in_use = InUse(Loop(queue.Queue(), Clocks(monotonic=lambda: 0.0)), config, (128, 64))
    long_url = "https://hcp.example.org/" + "w" * 600
    in_use.apply(Assignment.from_json(assignment("8805", "王\U00020000\r", qr_url=long_url)), save=False)
    assert in_use.origin == Origin(config.device.id, "08", "8805", "王\U00020000 ", config.device.channel, "")
    assert in_use.identity.staff_name == "王□ " and in_use.identity.qr_url == config.qr.url
    for key in ("staff.name", "qr.url"):
        assert key in in_use.fault

