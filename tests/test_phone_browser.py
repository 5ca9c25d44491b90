"""The phone page in a real browser (headless Chromium from Debian, driven by Selenium), fed by the simulator.

The simulator runs the unchanged device in ``staff_button`` mode against a real hall on loopback: one service
ends unrated, one is rated at the counter. The QR codes are decoded from the simulator's saved frames (zxing-cpp),
opened in Chromium and used as a citizen would: rate with a reason, a comment and 不公开; the report and the
provincial push count it once; the same link then offers only 追评; the counter-rated service's link offers only
追评; a forged or altered link is refused; and after 5 working days across a holiday (the hall's clock moved) the
page is closed and the service goes to the province unrated with the default marker.

An SMS reminder for a service with a known mobile number (and none without) opens the same form.
One browser for the module. ``make test-phone`` runs these (``-m slow``); they need ``chromium`` and
``chromium-driver`` (``make setup`` installs them).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zxingcpp
from phone_util import ASSIGNMENT, KEY, Clock, Device
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from hall import HallServer
from hall.dating import CHINA
from hall.desk import HallDesk
from hall.phone import code_of, session_ids
from hall.province import ProvinceStandIn
from hall.push import ProvincePush, check_item
from hall.workdays import load_calendar

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=390,844"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs chromium and chromium-driver (make setup)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    """The hall (its phone page and push on a clock the tests move), the stand-in province, and the push."""
    folder = tmp_path_factory.mktemp("hall")
    db = str(folder / "hall.db")
    with HallDesk(db) as desk:
        desk.register("WE-SIM", "HQ", "偃师区政务服务中心", "410307")
    clock = Clock(datetime.datetime.now(CHINA).isoformat())
    province = ProvinceStandIn().start()
    server = HallServer(db, default_key=KEY).start()
    assert server.phone is not None
    server.phone.clock = clock
    server.set_assignment(None, {**ASSIGNMENT, "qr_url": f"{server.url}/w/07"})
    push = ProvincePush(db, province.url, clock=clock, retry_base_s=0.05, retry_max_s=0.3, poll_s=0.05)
    server.phone.on_stored = push.wake
    push.start()
    yield server, push, province, clock, folder
    push.close()
    server.close()
    province.stop()


def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def services(hall):
    """Run the simulator: one service unrated, one rated 满意 at the counter. Returns (unrated link, rated link)."""
    server, _, _, _, folder = hall
    frames = folder / "frames"
    script = ("wait 1\n"                                   # the hall's assignment (window 07, its QR host)
              "staff\nwait 2.2\n"                          # nobody presses: unrated, the later screen
              "staff\nwait 0.4\npress 2\nwait 1.2\n")      # 满意 at the counter, then the follow-up screen
    (folder / "script.txt").write_text(script, encoding="utf-8")
    command = [sys.executable, "-m", "sim", "--data", str(folder / "data"), "--server", server.url,
               "--device-key", KEY, "--frames", str(frames), "--script", str(folder / "script.txt"),
               "--set", "device.id=WE-SIM", "--set", "session.source=staff_button",
               "--set", "session.rating_window_s=1.5", "--set", "session.later_s=0.8",
               "--set", "session.thanks_s=0.3", "--set", "session.reasons_s=0.8",
               "--set", "upload.backoff_min_s=0.2", "--set", "upload.backoff_max_s=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    links = []
    for frame in sorted(frames.iterdir()):
        for found in zxingcpp.read_barcodes(Image.open(frame).convert("L")):
            if "/S/" in found.text and found.text not in links:
                links.append(found.text)
    events = {e["session_id"]: e for e in server.events() if e.get("session_id")}
    kinds = {}
    for url in links:
        ids = session_ids(url.rsplit("/", 1)[1])
        assert ids is not None and ids[0] in events, url
        kinds[events[ids[0]]["type"]] = url
    assert set(kinds) == {"unrated", "rating"}, links
    assert all(url == url.upper() and url.startswith(server.url.upper() + "/S/") for url in links)
    return kinds["unrated"], kinds["rating"]


def ids(driver, selector):
    return [element.get_attribute("id") for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def click(driver, element_id):
    driver.find_element(By.ID, element_id).click()


def submit(driver):
    """Send the form and wait for the answer's page (thanks, or the form again with what was wrong)."""
    click(driver, "submit")
    WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.find_elements(By.ID, "thanks") or d.find_elements(By.ID, "error"))


def text_of(driver):
    return driver.find_element(By.TAG_NAME, "body").text


def month_now(clock):
    return datetime.datetime.fromtimestamp(clock(), CHINA).strftime("%Y-%m")


def test_a_citizen_rates_on_the_phone_once_then_only_adds_details(browser, hall, services):
    server, _, province, clock, _ = hall
    unrated_link, _ = services
    browser.get(unrated_link)
    assert "请对本次服务进行评价" in text_of(browser) and "赵六" in text_of(browser)
    assert ids(browser, "input[name=level]") == [
        "level-very_satisfied", "level-satisfied", "level-basically_satisfied", "level-dissatisfied",
        "level-very_dissatisfied"]
    assert not browser.find_element(By.ID, "reason-401").is_displayed()  # a level's tags show once it is chosen
    click(browser, "level-dissatisfied")
    assert browser.find_element(By.ID, "reason-401").is_displayed()
    click(browser, "reason-401")
    browser.find_element(By.ID, "comment").send_keys("等候时间太长")
    click(browser, "public-no")
    submit(browser)
    assert "感谢您的评价" in text_of(browser) and "不公开" in text_of(browser)

    session = session_ids(unrated_link.rsplit("/", 1)[1])
    assert session is not None
    wait_for(lambda: any(i["itemType"] == "rating" and i["projectNo"] == session[0] for i in province.items))
    ratings = [i for i in province.items if i["itemType"] == "rating" and i["projectNo"] == session[0]]
    assert len(ratings) == 1 and not check_item(ratings[0])
    item = ratings[0]
    assert (item["pf"], item["satisfaction"], item["evalDetail"], item["writingEvaluation"], item["isPublic"],
            item["assessNumber"], item["proManager"]) == ("3", "2", "401", "等候时间太长", "0", 1, "赵六")
    with HallDesk(server.phone.db_path) as desk:
        report = desk.report(month_now(clock))
    district = report["district"]
    assert (district["ratings"], district["unrated"], district["services"], district["bad"]) == (2, 0, 2, 1)
    assert [b["reason_codes"] for b in report["bad"]] == [["401"]]

    # The same link again: only a 追评.
    browser.get(unrated_link)
    assert "追加评价" in text_of(browser) and ids(browser, "input[name=level]") == []
    click(browser, "reason-402")
    browser.find_element(By.ID, "comment").send_keys("补充：叫号后窗口无人")
    submit(browser)
    assert "感谢您的追评" in text_of(browser)
    wait_for(lambda: any(i["itemType"] == "followup" and i["projectNo"] == session[0] for i in province.items))
    followup = next(i for i in province.items if i["itemType"] == "followup" and i["projectNo"] == session[0])
    assert (followup["assessNumber"], followup["evalDetail"], followup["ratingId"]) == (2, "402", item["itemId"])
    browser.get(unrated_link)
    assert "已评价并追评" in text_of(browser) and browser.find_elements(By.TAG_NAME, "form") == []
    assert len([i for i in province.items if i["itemType"] == "rating" and i["projectNo"] == session[0]]) == 1


def test_a_service_rated_at_the_counter_offers_only_a_followup(browser, hall, services):
    _, rated_link = services
    browser.get(rated_link.lower())  # the hall reads the link in any case
    assert "追加评价" in text_of(browser) and "已经评价过" in text_of(browser)
    assert ids(browser, "input[name=level]") == [] and "非常满意" not in text_of(browser)


def test_a_forged_or_altered_link_is_refused(browser, hall, services):
    server, *_ = hall
    unrated_link, _ = services
    code = unrated_link.rsplit("/", 1)[1]
    altered = unrated_link[:-1] + ("B" if code[-1] != "B" else "C")
    forged = f"{server.url}/S/{code_of(str(uuid.uuid4()))}"
    for url in (altered, forged, f"{server.url}/S/NOT-A-CODE"):
        browser.get(url)
        assert "未找到该次服务" in text_of(browser) and browser.find_elements(By.TAG_NAME, "form") == []
    browser.get(f"{server.url}/w/07")
    assert "窗口评价说明" in text_of(browser) and browser.find_elements(By.TAG_NAME, "form") == []


def test_the_sms_reminder_goes_once_to_a_known_mobile_and_its_link_opens_the_form(browser, hall):
    server, *_ = hall
    device = Device(server.url, "WE-QUEUE")
    now = datetime.datetime.now(CHINA).isoformat(timespec="seconds")
    called = server.open_session("WE-QUEUE", ticket="B017", mobile="13800138000")  # from the queue system
    quiet = server.open_session("WE-QUEUE", ticket="B018")                          # no number given
    device.post(device.event("unrated", now, called["session_id"]))
    device.post(device.event("unrated", now, quiet["session_id"]))
    sent = [m for m in server.phone.sms.sent if m.mobile == "13800138000"]
    assert len(sent) == 1 and len(server.phone.sms.sent) == 1
    url = sent[0].text.rsplit("：", 1)[1]
    browser.get(url)
    assert "请对本次服务进行评价" in text_of(browser) and "B017" not in url


def test_after_5_working_days_across_a_holiday_the_page_closes_and_the_default_marker_goes_out(browser, hall):
    server, push, province, clock, _ = hall
    device = Device(server.url, "WE-OLD")
    session, url = device.service("2026-09-30T16:00:00+08:00")  # the day before 国庆
    last_day = load_calendar().add_working_days(datetime.date(2026, 9, 30), 5)
    clock.set(f"{last_day}T22:00:00+08:00")
    browser.get(url)
    assert "请对本次服务进行评价" in text_of(browser)
    wait_for(lambda: any(i["itemType"] == "unrated" and i["projectNo"] == session for i in province.items))
    clock.set(f"{last_day + datetime.timedelta(days=1)}T08:00:00+08:00")
    push.wake()
    browser.get(url)
    assert "评价期限已过" in text_of(browser) and browser.find_elements(By.TAG_NAME, "form") == []
    wait_for(lambda: any(i["itemType"] == "default" and i["projectNo"] == session for i in province.items))
    mine = [i for i in province.items if i["projectNo"] == session]
    assert [(i["itemType"], i["isDefault"], i["satisfaction"]) for i in mine] == [
        ("unrated", "0", ""), ("default", "1", "")]
    assert Path(server.phone.db_path).exists()
