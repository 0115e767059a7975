"""Writing events: audit_event_record through the ingest buffer and its drain, log_event grouping,
log_events_bulk, no loss or doubles (a drain worker killed mid-batch included)."""

import os
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import RequestFactory
from prometheus_client import REGISTRY

from audit.chain import chain_verify
from audit.jobs import LogEventJob
from audit.models import AuditLog, AuditStagedEvent
from audit.services import (
    DRAIN_FLAG,
    audit_drain_ensure,
    audit_event_record,
    audit_events_bulk_run,
    audit_staged_drain,
)
from queues.models import JobAttempt, JobRecord
from queues.services import job_enqueue
from tests.factories.audit import EventFactory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _failed_enqueues():
    return REGISTRY.get_sample_value("slimy_audit_events_failed_total", {"stage": "enqueue"}) or 0


def _written():
    return REGISTRY.get_sample_value("slimy_audit_events_written_total") or 0


@pytest.mark.django_db(transaction=True)
def test_recorded_event_is_written_by_the_worker_with_request_context(run_worker, user):
    request = RequestFactory().post("/x", HTTP_USER_AGENT="Mozilla/5.0 test", REMOTE_ADDR="10.1.2.3")
    request.user, request.request_id = user, "req-123"
    before = _written()
    with transaction.atomic():
        audit_event_record(
            action="conversation.create",
            resource_type="conversation",
            resource_id=42,
            details={"title": "hi", "api_key": "k"},
            request=request,
        )
    staged = AuditStagedEvent.objects.get()
    assert staged.event["details"] == {"title": "hi", "api_key": "[redacted]"}  # redacted before staging
    job = JobRecord.objects.get(job_type="audit_drain")  # requested on commit
    run_worker(["audit"])
    row = AuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id) == ("conversation.create", "conversation", "42")
    assert (row.actor_id, row.actor_ref, row.actor_label) == (user.pk, user.pk, "alice")
    assert (row.ip, row.user_agent, row.request_id) == ("10.1.2.3", "Mozilla/5.0 test", "req-123")
    assert row.details == {"title": "hi", "api_key": "[redacted]"}
    job.refresh_from_db()
    assert job.status == "completed" and job.result == {"drained": 1, "written": 1, "duplicates": 0, "batches": 1}
    assert not AuditStagedEvent.objects.exists()
    assert _written() == before + 1


@pytest.mark.django_db(transaction=True)
def test_event_of_a_rolled_back_transaction_is_not_recorded(run_worker):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit_event_record(action="thing.delete")
            raise RuntimeError("the caller's change failed")
    run_worker(["audit"])
    assert not JobRecord.objects.exists() and not AuditLog.objects.exists()
    assert not AuditStagedEvent.objects.exists()


@pytest.mark.django_db
def test_enqueue_failure_is_counted_and_never_raised_nor_breaks_the_callers_transaction(user):
    before = _failed_enqueues()
    with transaction.atomic():
        audit_event_record(action="x" * 500)  # invalid: too long
        audit_event_record(action="ok", details={"n": float("inf")})  # invalid details
        user.first_name = "Still"
        user.save()  # the caller's transaction is still usable
    assert _failed_enqueues() == before + 2
    assert not JobRecord.objects.exists() and not AuditStagedEvent.objects.exists()


@pytest.mark.django_db
def test_database_failure_is_counted_and_rolled_back_to_a_savepoint(user):
    before = _failed_enqueues()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1ms'")
            cursor.execute("ALTER TABLE audit_auditstagedevent ADD CONSTRAINT audit_test_none CHECK (false) NOT VALID")
        audit_event_record(action="blocked")  # the INSERT violates the constraint: an IntegrityError
        user.last_name = "Ok"
        user.save()
    assert _failed_enqueues() == before + 1
    user.refresh_from_db()
    assert user.last_name == "Ok"


@pytest.mark.django_db(transaction=True)
def test_waiting_log_event_jobs_are_grouped_into_one_bulk_write(run_worker):
    with transaction.atomic():
        for n in range(40):  # what POST /api/audit-log does for one event
            job_enqueue(job_type="log_event", payload={"action": "grouped", "resourceId": str(n)})
    run_worker(["audit"])
    assert AuditLog.objects.count() == 40
    assert sorted(AuditLog.objects.values_list("resource_id", flat=True)) == sorted(str(n) for n in range(40))
    jobs = list(JobRecord.objects.filter(job_type="log_event"))
    assert {j.status for j in jobs} == {"completed"}
    leaders = [j for j in jobs if j.result and "grouped" in j.result]
    assert len(leaders) == 1 and leaders[0].result == {"written": 40, "grouped": 39}
    followers = [j for j in jobs if j.result and "groupedInto" in j.result]
    assert len(followers) == 39 and {j.result["groupedInto"] for j in followers} == {str(leaders[0].pk)}
    assert JobAttempt.objects.filter(outcome="completed").count() == 40
    assert chain_verify().ok


@pytest.mark.django_db
def test_bulk_write_skips_events_already_stored_and_duplicates_within_the_batch():
    events = [LogEventJob.validate(EventFactory()) for _ in range(5)]
    with transaction.atomic():
        first = audit_events_bulk_run(events=events[:3] + [events[0]])
    with transaction.atomic():
        second = audit_events_bulk_run(events=events)  # a retry that also carries two new events
    assert first == {"received": 4, "written": 3, "duplicates": 1}
    assert second == {"received": 5, "written": 2, "duplicates": 3}
    assert AuditLog.objects.count() == 5 and chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_bulk_job_and_its_retry_write_each_event_once(run_worker, staff):
    events = [dict(EventFactory(), eventId=str(uuid.uuid4())) for _ in range(300)]
    job_enqueue(job_type="log_events_bulk", payload={"events": events})
    job_enqueue(job_type="log_events_bulk", payload={"events": events[:150]})  # a producer's retry
    run_worker(["audit"])
    assert AuditLog.objects.count() == 300
    results = sorted(j.result["written"] for j in JobRecord.objects.filter(job_type="log_events_bulk"))
    assert results == [0, 300] or results == [150, 150]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_chain_and_lose_nothing():
    from audit.services import audit_events_write

    batches = [[LogEventJob.validate(EventFactory()) for _ in range(50)] for _ in range(6)]
    errors = []

    def write(batch):
        try:
            with transaction.atomic():
                audit_events_write(events=batch)
                audit_events_write(events=batch[:10])  # replayed part: nothing new
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert AuditLog.objects.count() == 300
    report = chain_verify()
    assert report.ok and report.checked == 300


def _worker_env():
    db = settings.DATABASES["default"]
    return dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        EXTRA_JOB_MODULES="tests.jobs",
        RQ_LOG_LEVEL="ERROR",
        LOG_LEVEL="ERROR",
    )


WORKER_CMD = [
    sys.executable,
    "manage.py",
    "rqworker",
    "audit",
    "--burst",
    "--worker-class",
    "queues.worker.SlimySimpleWorker",
]


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_group_without_losing_or_doubling_events():
    with transaction.atomic():
        for n in range(400):
            job_enqueue(job_type="log_event", payload={"action": "load", "resourceId": str(n)})
    workers = [
        subprocess.Popen(WORKER_CMD, cwd=ROOT, env=_worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()[-2000:]
    ids = list(AuditLog.objects.values_list("resource_id", flat=True))
    assert len(ids) == 400 and set(ids) == {str(n) for n in range(400)}
    assert set(JobRecord.objects.values_list("status", flat=True)) == {"completed"}
    assert chain_verify().ok


# --- The ingest buffer and its drain


@pytest.mark.django_db(transaction=True)
def test_many_recorded_events_need_one_drain_job_and_keep_one_chain(run_worker, redis_conn):
    for n in range(250):
        audit_event_record(action="burst", resource_id=str(n))  # autocommit: each one commits at once
    assert AuditStagedEvent.objects.count() == 250
    assert JobRecord.objects.filter(job_type="audit_drain").count() == 1  # the flag de-duplicates requests
    assert redis_conn.exists(DRAIN_FLAG)
    run_worker(["audit"])
    ids = list(AuditLog.objects.order_by("id").values_list("resource_id", flat=True))
    assert ids == [str(n) for n in range(250)]  # chain order = order recorded
    assert not AuditStagedEvent.objects.exists() and chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_event_committed_after_a_drain_started_requests_another_drain(run_worker):
    audit_event_record(action="first")
    run_worker(["audit"])  # the drain cleared the flag when it started
    audit_event_record(action="second")
    drains = JobRecord.objects.filter(job_type="audit_drain")
    assert drains.count() == 2
    run_worker(["audit"])
    assert sorted(AuditLog.objects.values_list("action", flat=True)) == ["first", "second"]
    assert set(drains.values_list("status", flat=True)) == {"completed"}


@pytest.mark.django_db(transaction=True)
def test_drain_hands_over_to_a_successor_after_its_batches(run_worker, redis_conn):
    for n in range(30):
        audit_event_record(action="handover", resource_id=str(n))
    redis_conn.delete(DRAIN_FLAG)
    result = audit_staged_drain(batch=10, max_batches=2)
    assert result == {"drained": 20, "written": 20, "duplicates": 0, "batches": 2}
    assert AuditStagedEvent.objects.count() == 10
    assert redis_conn.exists(DRAIN_FLAG)  # it asked for a successor
    run_worker(["audit"])
    assert AuditLog.objects.count() == 30 and not AuditStagedEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_lost_drain_request_is_caught_by_the_periodic_safety_net(run_worker, redis_conn):
    redis_conn.set(DRAIN_FLAG, "1", ex=60)  # as if a drain were queued, but its job never made it
    audit_event_record(action="orphan")
    assert not JobRecord.objects.filter(job_type="audit_drain").exists()
    assert audit_drain_ensure() is True
    assert audit_drain_ensure() is False  # one waiting drain is enough
    run_worker(["audit"])
    assert AuditLog.objects.get().action == "orphan"
    assert audit_drain_ensure() is False  # nothing staged


@pytest.mark.django_db(transaction=True)
def test_staged_event_already_in_the_chain_is_not_written_twice(redis_conn):
    audit_event_record(action="replayed")
    event = AuditStagedEvent.objects.get().event
    AuditStagedEvent.objects.create(event=event)  # the same event id staged twice
    assert audit_staged_drain() == {"drained": 2, "written": 1, "duplicates": 1, "batches": 1}
    assert AuditLog.objects.count() == 1 and chain_verify().ok


def _sessions_blocked_by(pid: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid])
        return cursor.fetchone()[0]


RUNTIME_CMD = [sys.executable, "manage.py", "rqworker", "audit", "--burst"]  # the default runtime: drains on its pool


@pytest.mark.parametrize("worker_cmd", [WORKER_CMD, RUNTIME_CMD], ids=["simple-worker", "runtime-pool"])
@pytest.mark.django_db(transaction=True)
def test_drain_worker_killed_mid_batch_loses_no_event(redis_conn, worker_cmd):
    """kill -9 a real worker process while its drain transaction holds the batch; nothing is lost."""
    import signal
    import time

    from django.db import connections

    for n in range(300):
        audit_event_record(action="killed", resource_id=str(n))
    # Hold the chain head, so the worker's drain blocks inside its transaction after locking its batch.
    blocker = connections.create_connection("default")
    blocker.ensure_connection()
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditchainhead (id, last_id, last_hash, length, updated_at) "
            "VALUES (1, 0, %s, 0, now()) ON CONFLICT DO NOTHING",
            ["0" * 64],
        )
        cursor.execute("SELECT 1 FROM audit_auditchainhead WHERE id = 1 FOR UPDATE")
        cursor.execute("SELECT pg_backend_pid()")
        blocker_pid = cursor.fetchone()[0]
    stderr = tempfile.TemporaryFile()
    worker = subprocess.Popen(
        worker_cmd,
        cwd=ROOT,
        env=_worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180  # a worker process starts slowly on a loaded machine
        # Wait for a session blocked by the held chain head: the drain, inside its transaction, after taking
        # its batch. The wait takes no row lock itself (a probe that locked the buffer rows, even briefly,
        # made a drain running at that moment skip them all and finish with nothing to do).
        while not _sessions_blocked_by(blocker_pid):
            if worker.poll() is not None:
                stderr.seek(0)
                pytest.fail(f"the worker exited ({worker.returncode}) before its drain: {stderr.read()[-2000:]!r}")
            assert time.monotonic() < deadline, "the worker never started its drain"
            time.sleep(0.05)
        with transaction.atomic():  # the worker holds every buffered row
            assert not AuditStagedEvent.objects.select_for_update(skip_locked=True).exists()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        stderr.close()
        blocker.rollback()
        blocker.close()
    assert AuditStagedEvent.objects.count() == 300 and not AuditLog.objects.exists()
    # The next drain (here: by the safety net, since the killed one stays `started` until the reconciler
    # declares its worker dead) writes every event once.
    redis_conn.delete(DRAIN_FLAG)
    audit_drain_ensure()
    survivor = subprocess.run(worker_cmd, cwd=ROOT, env=_worker_env(), capture_output=True, timeout=120)
    assert survivor.returncode == 0, survivor.stderr.decode()[-2000:]
    ids = list(AuditLog.objects.values_list("resource_id", flat=True))
    assert len(ids) == 300 and set(ids) == {str(n) for n in range(300)}
    assert not AuditStagedEvent.objects.exists() and chain_verify().ok


# --- Validated once (when enqueued), appended in streamed chunks


@pytest.mark.django_db(transaction=True)
def test_prompt_digested_when_enqueued_is_stored_as_that_digest_not_digested_again(run_worker):
    from audit.redaction import text_digest

    job_enqueue(job_type="log_events_bulk", payload={"events": [{"action": "chat.reply", "details": {"prompt": "hi"}}]})
    job_enqueue(job_type="log_event", payload={"action": "chat.reply", "details": {"userPrompt": "hello"}})
    run_worker(["audit"])
    stored = {row.action + str(sorted(row.details)): row.details for row in AuditLog.objects.all()}
    assert sorted(stored.values(), key=str) == sorted(
        [{"prompt": text_digest("hi")}, {"userPrompt": text_digest("hello")}], key=str
    )
    assert chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_record_not_in_the_stored_form_is_validated_and_redacted_when_run(run_worker, redis_conn):
    """A record job_enqueue did not write (by hand, an older release): the worker validates it fully."""
    from queues.services import job_push

    raw = JobRecord.objects.create(
        job_type="log_events_bulk",
        queue="audit",
        max_attempts=1,
        payload={
            "events": [{"action": "  padded  ", "details": {"password": "hunter2", "n": 2.0}, "ip": "::ffff:10.0.0.1"}]
        },
    )
    bad = JobRecord.objects.create(
        job_type="log_events_bulk", queue="audit", max_attempts=5, payload={"events": [{"action": "x" * 101}]}
    )
    job_push(job=raw)
    job_push(job=bad)
    run_worker(["audit"])
    row = AuditLog.objects.get()
    assert (row.action, row.details, row.ip) == ("padded", {"password": "[redacted]", "n": 2}, "10.0.0.1")
    bad.refresh_from_db()
    assert bad.status == "failed" and bad.attempts == 1 and "Invalid payload" in bad.error_message
    assert chain_verify().ok


def test_stored_form_is_what_validation_returns_and_is_taken_as_it_is():
    from audit.events import event_is_stored_form, events_stored
    from audit.jobs import LogEventsBulkJob
    from tests.audit.test_chain import TRICKY

    stored = LogEventsBulkJob.validate({"events": [dict(e) for e in TRICKY] + [EventFactory()]})
    assert all(event_is_stored_form(e) for e in stored["events"])
    assert events_stored(stored) is stored  # not validated again
    assert LogEventsBulkJob.validate_stored(stored) is stored
    partial = {"events": [{k: v for k, v in e.items() if k != "sessionId"} for e in stored["events"]]}
    assert not event_is_stored_form(partial["events"][0])
    assert events_stored(partial) == stored  # another shape: validated again, same result


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28T11:15:00.123Z",
        "2026-11-28T11:15:00Z",
        "2026-11-28T23:59:59.999Z",
        "2026-11-28T11:15:00+02:00",
        "2026-11-28T11:15:00.123456+00:00",
        "2026-11-28T11:15:00.5Z",
    ],
)
def test_occurred_text_fast_path_matches_parsing(value):
    from audit.chain import timestamp_text
    from audit.services import _occurred_text, _parse_occurred

    assert _occurred_text(value) == timestamp_text(_parse_occurred(value))


@pytest.mark.django_db(transaction=True)
def test_append_streamed_in_small_chunks_keeps_order_escapes_and_chain(monkeypatch):
    import audit.chain
    from audit.services import audit_events_write
    from tests.audit.test_chain import TRICKY

    monkeypatch.setattr(audit.chain, "COPY_CHUNK", 3)
    events = [LogEventJob.validate(dict(TRICKY[n % 2], resourceId=str(n))) for n in range(20)]
    with transaction.atomic():
        assert audit_events_write(events=events[:11] + events[:4]) == 11  # repeats within the batch skipped
    with transaction.atomic():
        assert audit_events_write(events=events) == 9
    assert list(AuditLog.objects.order_by("id").values_list("resource_id", flat=True)) == [str(n) for n in range(20)]
    report = chain_verify()
    assert report.ok and report.checked == 20


@pytest.mark.django_db(transaction=True)
def test_events_recorded_in_a_batch_are_staged_together_in_one_statement():
    from django.test.utils import CaptureQueriesContext

    from audit.services import audit_events_batched

    with CaptureQueriesContext(connection) as queries, transaction.atomic(), audit_events_batched():
        for n in range(3):
            audit_event_record(action="batched", resource_id=str(n))
        assert not AuditStagedEvent.objects.exists()  # held until the batch ends
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT INTO audit_auditstagedevent")]
    assert len(inserts) == 1
    assert [e.event["resourceId"] for e in AuditStagedEvent.objects.order_by("id")] == ["0", "1", "2"]
    # A batch left by an error stages nothing (its transaction is rolled back anyway).
    with pytest.raises(RuntimeError), transaction.atomic(), audit_events_batched():
        audit_event_record(action="lost")
        raise RuntimeError("the writer failed")
    assert AuditStagedEvent.objects.count() == 3
