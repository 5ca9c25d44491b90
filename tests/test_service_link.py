"""The device names the service in its later and follow-up QR codes (``qr.service_url``), so the hall's phone page
knows which service is meant: the panel's frame decodes (zxing-cpp) to a link the hall reads back to the session."""

from __future__ import annotations

import uuid

import pytest
import zxingcpp

from device import config as config_mod
from device import service_link
from device import state as st
from device.errors import ConfigError
from device.records import new_id
from device.ui.models import FOLLOWUP_MESSAGE, LaterScreen
from device.ui.screens import render
from hall.phone import session_ids
from helpers import tap

TEMPLATE = "https://hcp.example.org/S/{code}"


def decode(image):
    found = zxingcpp.read_barcodes(image.convert("L"))
    assert len(found) == 1
    return found[0].text


def later_of(rules, session_id):
    state, _ = st.step(st.State(), st.StaffRequested(session_id), 0.0, rules)
    state, effects = st.step(state, st.Tick(), rules.rating_window_s + 1, rules)
    assert state.screen == st.LATER and any(isinstance(e, st.CommitUnrated) for e in effects)
    return state.later_qr


def test_staff_button_sessions_are_uuidv7_with_74_random_bits():
    ids = {new_id() for _ in range(50)}
    assert len(ids) == 50 and all(uuid.UUID(i).version == 7 for i in ids)


def test_the_later_screen_names_the_session_and_decodes_at_128x64_back_to_it():
    rules = st.Rules(source="staff_button", service_qr=TEMPLATE)
    session = new_id()
    url = later_of(rules, session)
    assert url == service_link.service_link(TEMPLATE, session) and url.isupper() and len(url) == 52
    for size in ((128, 64), (256, 64), (128, 128)):
        text = decode(render(LaterScreen(qr_url=url), size))
        assert text == url
        assert session_ids(text.rsplit("/", 1)[1]) == (session, uuid.UUID(session).hex)  # the hall finds it


def test_the_followup_screen_after_a_rating_shows_the_same_link(make_app):
    app, factory, clock = make_app('session.source="staff_button"', f'qr.service_url="{TEMPLATE}"')
    app.events.put(st.StaffRequested(new_id()))
    app.pump()
    tap(app, factory, 2)
    for _ in range(5):
        clock.advance(1)
        app.pump()
    (rating,) = app.outbox.events()
    expected = service_link.service_link(TEMPLATE, rating["session_id"])
    assert app.model == LaterScreen(qr_url=expected, message=FOLLOWUP_MESSAGE)


def test_a_session_id_that_is_not_a_uuid_gets_no_link_of_its_own():
    rules = st.Rules(source="staff_button", service_qr=TEMPLATE)
    assert later_of(rules, "ticket-42") == ""  # the view shows the window's code


def test_hall_sessions_keep_the_halls_qr_url_else_get_the_link():
    rules = st.Rules(source="hall", service_qr=TEMPLATE)
    session = str(uuid.uuid4())
    state, _ = st.step(st.State(), st.SessionOpened(session, qr_url="https://hall.example.org/q/1"), 0.0, rules)
    assert state.session is not None and state.session.qr_url == "https://hall.example.org/q/1"
    state, _ = st.step(st.State(), st.SessionOpened(session), 0.0, rules)
    assert state.session is not None and state.session.qr_url == service_link.service_link(TEMPLATE, session)
    # The hall's qr_url too long for the panel: the service's link, not the window's code.
    too_long = st.SessionVetted(st.SessionOpened(session, qr_url="https://hall.example.org/" + "q" * 900),
                                qr_fits=False)
    state, effects = st.step(st.State(), too_long, 0.0, rules)
    assert state.session is not None and state.session.qr_url == service_link.service_link(TEMPLATE, session)
    assert any(isinstance(e, st.QrReplaced) for e in effects)


def test_auto_derives_from_the_windows_url_and_empty_keeps_the_windows_code(make_app):
    assert service_link.template_for("auto", "https://hcp.example.org/w/01") == TEMPLATE
    assert service_link.template_for("", "https://hcp.example.org/w/01") == ""
    app, *_ = make_app('session.source="staff_button"')
    assert app.loop.rules.service_qr == "https://hcp.example.org/S/{code}"  # the default: auto
    app, *_ = make_app('session.source="staff_button"', 'qr.service_url=""')
    assert app.loop.rules.service_qr == ""
    assert later_of(app.loop.rules, new_id()) == ""  # the view shows the window's code then


def test_a_link_too_long_for_the_panel_falls_back_to_the_windows_code(make_app):
    long = "https://" + "h" * 400 + ".example.org/S/{code}"
    app, *_ = make_app('session.source="staff_button"', f'qr.service_url="{long}"')
    assert app.loop.rules.service_qr == ""


@pytest.mark.parametrize("bad", ["https://hcp.example.org/S/", "ftp://x/{code}", "{code}", "https:///{code}{code}"])
def test_a_template_without_one_code_or_host_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError) as caught:
        config_mod.load(overrides=[f'qr.service_url="{bad}"'])
    assert "qr.service_url" in str(caught.value)
