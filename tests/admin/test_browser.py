"""One real browser session: log in, open the queue dashboard, retry a failed job, see it complete.

Needs Debian's `chromium` and `chromium-driver` packages; screenshots go to test-artifacts/.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"

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
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def _shot(driver, name):
    driver.save_screenshot(str(ARTIFACTS / f"admin-{name}.png"))


def test_staff_retries_a_failed_job_from_the_dashboard_and_sees_it_complete(
    browser, live_server, run_worker, django_user_model
):
    from selenium.webdriver.common.by import By

    django_user_model.objects.create_superuser(username="operator", password="pw-operator-123", email="o@x.test")
    # A real failure: the flaky job fails its only allowed attempt; it would succeed on the next one.
    job = job_enqueue(job_type="test_flaky", payload={"succeed_on": 2, "tag": "browser"})
    JobRecord.objects.filter(pk=job.pk).update(max_attempts=1)
    run_worker()
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.FAILED

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("pw-operator-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.LINK_TEXT, "Queue dashboard").click()
    assert "Workers" in browser.page_source
    failed_link = browser.find_element(By.CSS_SELECTOR, "#slimy-queue-database .slimy-failed a")
    assert failed_link.text == "1"
    _shot(browser, "1-dashboard")

    failed_link.click()  # the job list, filtered to this queue's failed jobs
    browser.find_element(By.CSS_SELECTOR, f"span[title='{job.pk}']").click()
    assert "failed" in browser.find_element(By.CSS_SELECTOR, ".slimy-status").text
    _shot(browser, "2-failed-job")
    browser.find_element(By.CSS_SELECTOR, "a.slimy-action-retry").click()
    browser.find_element(By.NAME, "reason").send_keys("flaky dependency is back")
    _shot(browser, "3-confirm-retry")
    browser.find_element(By.CSS_SELECTOR, "form input[type=submit][value^='Yes']").click()
    assert "1 job(s) retried." in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text

    run_worker()  # the worker picks the retried job up
    browser.refresh()
    assert browser.find_element(By.CSS_SELECTOR, ".slimy-status").text == "completed"
    assert "#2 completed" in browser.find_element(By.ID, "slimy-attempts").text
    _shot(browser, "4-completed")
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_job_page_shows_a_running_jobs_output_live(browser, live_server, django_user_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from queues.output import output_writer_open
    from queues.services import job_start

    django_user_model.objects.create_superuser(username="operator", password="pw-operator-123", email="o@x.test")
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 1, "tag": "live"})
    job_start(job_id=job.pk, worker_name="browser-test")  # running: the panel keeps polling
    writer = output_writer_open(job_id=str(job.pk), job_type=job.job_type, attempt=1)
    writer.write("Hello ")
    writer.write("world")

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("pw-operator-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "user-tools")  # logged in (waits up to the implicit timeout)
    browser.get(f"{live_server.url}/admin/queues/jobrecord/{job.pk}/change/")
    box = browser.find_element(By.ID, "slimy-output")
    WebDriverWait(browser, 10).until(lambda d: "Hello world" in box.text)
    assert "attempt 1" in box.text
    writer.write(", again")  # appended while the page is open
    WebDriverWait(browser, 10).until(lambda d: "Hello world, again" in box.text)
    _shot(browser, "5-live-output")
