"""What an operator sees in a real browser (headless Chromium) at 1280 px and on a 390-px phone:
the front door, the branded admin, the queue dashboard and the job list. Screenshots go to
test-artifacts/ (ops-<page>-<width>.png).
"""

import datetime as dt
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from queues.constants import JobStatus, QueueName
from queues.keys import SLOTS_KEY
from queues.models import JobRecord
from tests.factories.admin import FinishedJobFactory, JobRecordFactory

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
WIDTHS = {"desktop": 1280, "phone": 390}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--window-size=1280,900",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def _viewport(driver, width):
    """Emulate a screen `width` CSS pixels wide (a phone below 400: touch, mobile viewport)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900 if width > 400 else 844, "deviceScaleFactor": 1, "mobile": width < 400},
    )


def _shot(driver, name, width):
    # The whole page, not only the first screen: resize the emulated screen to the document's height.
    height = driver.execute_script("return Math.max(document.documentElement.scrollHeight, 600)")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": width < 400},
    )
    driver.save_screenshot(str(ARTIFACTS / f"ops-{name}-{width}.png"))
    _viewport(driver, width)


def _overflow(driver) -> int:
    """CSS pixels the page is wider than the screen (0 = no horizontal scrolling)."""
    return driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")


def _rect(element):
    return element.rect  # x, y, width, height in CSS pixels


def _login(driver, live_server, django_user_model):
    from selenium.webdriver.common.by import By

    django_user_model.objects.create_superuser(username="operator", password="pw-operator-123", email="o@x.test")
    driver.get(f"{live_server.url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("operator")
    driver.find_element(By.NAME, "password").send_keys("pw-operator-123")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    driver.find_element(By.ID, "user-tools")


def test_front_door_points_a_newcomer_at_the_admin_docs_health_and_quick_start(browser, live_server):
    from selenium.webdriver.common.by import By

    for width in WIDTHS.values():
        _viewport(browser, width)
        browser.get(f"{live_server.url}/")
        assert browser.title == "Slimy"
        doors = {a.get_attribute("id"): a for a in browser.find_elements(By.CSS_SELECTOR, ".doors a")}
        assert set(doors) == {"slimy-link-admin", "slimy-link-docs", "slimy-link-health", "slimy-link-quick-start"}
        assert all(a.is_displayed() for a in doors.values())
        assert _overflow(browser) <= 0
        if width < 400:  # one door under the other
            tops = [_rect(a)["y"] for a in doors.values()]
            assert tops == sorted(tops) and len(set(tops)) == 4
        assert "make run" in browser.find_element(By.CSS_SELECTOR, ".readme pre").text
        assert "First run: what you see" in browser.find_element(By.CSS_SELECTOR, ".readme").text
        _shot(browser, "front-door", width)

    _viewport(browser, WIDTHS["desktop"])
    browser.get(f"{live_server.url}/")
    browser.find_element(By.ID, "slimy-link-health").click()
    assert '"ok": true' in browser.page_source.replace('"ok":true', '"ok": true')
    browser.get(f"{live_server.url}/")
    browser.find_element(By.ID, "slimy-link-docs").click()
    browser.find_element(By.CSS_SELECTOR, "#swagger-ui")  # Swagger UI, served from this server
    browser.get(f"{live_server.url}/")
    browser.find_element(By.ID, "slimy-link-admin").click()
    assert browser.find_element(By.CSS_SELECTOR, "#site-name a").text == "Slimy"
    assert browser.title == "Log in | Slimy admin"


def _busy_queues(redis_conn):
    now = timezone.now()
    for minutes_ago, n in ((2, 6), (7, 3), (18, 9), (41, 2)):
        for _ in range(n):
            FinishedJobFactory(
                queue=QueueName.DATABASE, job_type="test_echo", finished_at=now - dt.timedelta(minutes=minutes_ago)
            )
    FinishedJobFactory(
        queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED, finished_at=now - dt.timedelta(minutes=3)
    )
    JobRecordFactory.create_batch(4, queue=QueueName.AUDIT, job_type="test_record", status=JobStatus.QUEUED)
    for name, host, pid, fields in (
        (
            "laptop.1201",
            "laptop",
            1201,
            {
                "chat:busy": 3,
                "chat:slots": 5,
                "database:busy": 7,
                "database:slots": 10,
                "audit:busy": 0,
                "audit:slots": 2,
            },
        ),
        ("box-2.88", "box-2", 88, {"database:busy": 10, "database:slots": 10}),
    ):
        redis_conn.hset(SLOTS_KEY.format(name), mapping={"host": host, "pid": pid, **fields})
        redis_conn.expire(SLOTS_KEY.format(name), 120)


def test_dashboard_fits_1280_and_stacks_on_a_phone(browser, live_server, django_user_model, redis_conn):
    from selenium.webdriver.common.by import By

    _busy_queues(redis_conn)
    _login(browser, live_server, django_user_model)
    url = f"{live_server.url}/admin/queues/jobrecord/dashboard/"

    _viewport(browser, WIDTHS["desktop"])
    browser.get(url)
    _shot(browser, "dashboard", WIDTHS["desktop"])
    assert browser.title == "Queues | Slimy admin"
    assert _overflow(browser) <= 0
    cards = browser.find_elements(By.CSS_SELECTOR, "#slimy-queues .slimy-card")
    assert len(cards) == 3
    assert len({_rect(c)["y"] for c in cards}) == 1  # side by side
    viewport = browser.execute_script("return document.documentElement.clientWidth")
    for card in cards:
        chart = card.find_element(By.CSS_SELECTOR, "svg.slimy-chart")
        box = _rect(chart)
        assert box["width"] >= 250 and box["x"] + box["width"] <= viewport  # readable, and not cut off
    database = browser.find_element(By.ID, "slimy-queue-database")
    ticks = [t.text for t in database.find_elements(By.CSS_SELECTOR, "svg text.y-tick")]
    assert ticks == ["0", "5", "10"]  # the busiest minute had 9 jobs
    assert len(database.find_elements(By.CSS_SELECTOR, "svg text.x-tick")) == 5
    hosts = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#slimy-workers tr.slimy-host")]
    assert hosts == ["box-2", "laptop"]
    laptop = browser.find_elements(By.CSS_SELECTOR, "#slimy-workers tr.slimy-process")[1]
    assert "chat 3/5" in laptop.text and "database 7/10" in laptop.text and "10/17" in laptop.text

    _viewport(browser, WIDTHS["phone"])
    browser.get(url)
    _shot(browser, "dashboard", WIDTHS["phone"])
    assert _overflow(browser) <= 0
    cards = browser.find_elements(By.CSS_SELECTOR, "#slimy-queues .slimy-card")
    xs, ys = [_rect(c)["x"] for c in cards], [_rect(c)["y"] for c in cards]
    assert len(set(xs)) == 1 and ys == sorted(ys) and len(set(ys)) == 3  # stacked
    assert all(_rect(c)["width"] <= 390 for c in cards)
    cell = browser.find_element(By.CSS_SELECTOR, "#slimy-workers tr.slimy-process td")
    assert browser.execute_script("return getComputedStyle(arguments[0]).display", cell) == "flex"  # stacked rows

    # Without the runtime's slots: RQ's workers, still grouped by host, still no horizontal scroll.
    for key in redis_conn.scan_iter(match=SLOTS_KEY.format("*")):
        redis_conn.delete(key)
    from queues.worker import SlimySimpleWorker

    worker = SlimySimpleWorker([QueueName.DATABASE, QueueName.AUDIT], connection=redis_conn, name="rq-worker-7")
    worker.register_birth()
    try:
        for width in WIDTHS.values():
            _viewport(browser, width)
            browser.get(url)
            assert _overflow(browser) <= 0
            row = browser.find_element(By.CSS_SELECTOR, "#slimy-workers tr.slimy-process")
            assert "rq-worker-7" in row.text and "audit, database" in row.text
            _shot(browser, "dashboard-rq-workers", width)
    finally:
        worker.register_death()


def test_dashboard_refreshes_its_figures_without_reloading(browser, live_server, django_user_model, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setattr("queues.admin.views.DASHBOARD_REFRESH_SECONDS", 1)
    _login(browser, live_server, django_user_model)
    _viewport(browser, WIDTHS["desktop"])
    browser.get(f"{live_server.url}/admin/queues/jobrecord/dashboard/")
    failed = "#slimy-queue-chat .slimy-failed a"
    assert browser.find_element(By.CSS_SELECTOR, failed).text == "0"
    browser.execute_script("window.slimyNotReloaded = true")
    JobRecordFactory.create_batch(2, queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.CSS_SELECTOR, failed).text == "2")
    assert browser.execute_script("return window.slimyNotReloaded") is True
    assert browser.find_element(By.ID, "slimy-refreshed").text.startswith("updated ")

    # While someone types a pause reason, the part they type in is left alone.
    box = browser.find_element(By.CSS_SELECTOR, "#slimy-queue-chat input[name=reason]")
    box.send_keys("deploying")
    JobRecordFactory(queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED)
    browser.execute_script("return new Promise(r => setTimeout(r, 2500))")
    assert box.get_attribute("value") == "deploying"
    assert browser.find_element(By.CSS_SELECTOR, failed).text == "2"

    # A form error re-renders the dashboard from the operation's POST-only address; it still refreshes.
    browser.execute_script(
        "document.querySelector('#slimy-clean input[name=before]').value = '2999-01-01';"
        "document.getElementById('slimy-clean').submit();"
    )
    WebDriverWait(browser, 20).until(lambda d: "/dashboard/clean/" in d.current_url)
    assert "The date is in the future." in browser.find_element(By.ID, "slimy-clean").text
    assert browser.find_element(By.CSS_SELECTOR, failed).text == "3"
    JobRecordFactory(queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.CSS_SELECTOR, failed).text == "4")


def test_job_list_hides_internal_jobs_and_drills_down_to_days_with_jobs(browser, live_server, django_user_model):
    from selenium.webdriver.common.by import By

    today = timezone.now()
    echo = [FinishedJobFactory(job_type="test_echo") for _ in range(3)]
    audit = [FinishedJobFactory(job_type="log_event", queue=QueueName.AUDIT) for _ in range(6)]
    earlier = FinishedJobFactory(job_type="test_echo")
    # Three days before today, in the same month when there is room, else the same month's 1st → later day.
    other_day = today - dt.timedelta(days=3) if today.day > 3 else today + dt.timedelta(days=3)
    JobRecord.objects.filter(pk=earlier.pk).update(created_at=other_day)
    _login(browser, live_server, django_user_model)
    url = f"{live_server.url}/admin/queues/jobrecord/"

    for width in WIDTHS.values():
        _viewport(browser, width)
        browser.get(url)
        shown = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "#result_list span[title]")}
        assert shown == {str(j.pk) for j in echo + [earlier]}
        notice = browser.find_element(By.ID, "slimy-internal-hidden")
        assert "log_event" in notice.text
        days = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav.toplinks a:not(.date-back)")]
        expected = sorted([today, other_day], key=lambda d: d.date())
        assert days == [f"{d:%B} {d.day}" for d in expected]  # not every day of the month
        _shot(browser, "job-list", width)

    _viewport(browser, WIDTHS["desktop"])
    browser.get(url)
    browser.find_element(By.LINK_TEXT, "Show internal jobs").click()
    shown = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "#result_list span[title]")}
    assert shown == {str(j.pk) for j in echo + audit + [earlier]}
    assert "internal=show" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "nav.toplinks a:not(.date-back)").click()  # the earliest day
    shown = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "#result_list span[title]")}
    first_day = min([today, other_day], key=lambda d: d.date())
    assert shown == ({str(earlier.pk)} if first_day is other_day else {str(j.pk) for j in echo + audit})
    _shot(browser, "job-list-internal-shown", WIDTHS["desktop"])
