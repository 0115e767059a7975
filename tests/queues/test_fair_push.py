"""Pushes to a fair-shared queue (FAIR_QUEUES, default chat) go to the tenants' lines, on real Redis and
PostgreSQL: submission, due retries, cancel and delete, ids left on RQ's plain list, depth figures."""

import pytest
from rq.job import Job

from queues.connections import get_rq_queue
from queues.constants import JobStatus, QueueName
from queues.fairness import fair_pop, fair_waiting_count, fair_waiting_heads, fair_waiting_ids
from queues.models import JobRecord
from queues.reconcile import scheduled_release_due
from queues.selectors.queue_state import queue_depths
from queues.services import job_cancel, job_delete_from_redis, job_enqueue, job_push
from queues.services.fair import fair_plain_drain

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = QueueName.CHAT


def _step(guild, tag="t", **extra):
    return job_enqueue(job_type="test_guild_step", payload={"guildId": guild, "tag": tag}, **extra)


def test_a_chat_job_waits_in_its_tenants_line_and_its_rq_job_is_written(redis_conn):
    job = _step("G")
    assert fair_waiting_ids(conn=redis_conn, queue=CHAT) == {str(job.pk)}
    assert redis_conn.llen(get_rq_queue(CHAT).key) == 0
    rq_job = Job.fetch(str(job.pk), connection=redis_conn)
    assert rq_job.args == (str(job.pk),) and rq_job.origin == "chat" and rq_job.enqueued_at is not None
    popped = fair_pop(conn=redis_conn, queue=CHAT, worker="w")
    assert (popped.job_id, popped.tenant, popped.priority) == (str(job.pk), "G", "normal")


def test_other_queues_keep_rqs_lists(redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    assert redis_conn.lrange(get_rq_queue(QueueName.DATABASE).key, 0, -1) == [str(job.pk).encode()]
    assert fair_waiting_ids(conn=redis_conn, queue=QueueName.DATABASE) == set()


def test_an_empty_fair_queues_setting_uses_the_plain_list(redis_conn, settings):
    settings.FAIR_QUEUES = []
    job = _step("G")
    assert redis_conn.lrange(get_rq_queue(CHAT).key, 0, -1) == [str(job.pk).encode()]
    assert fair_waiting_ids(conn=redis_conn, queue=CHAT) == set()


def test_a_due_retry_is_released_into_its_tenants_line(redis_conn):
    job = _step("G", delay=60)
    assert job.status == JobStatus.SCHEDULED and fair_waiting_ids(conn=redis_conn, queue=CHAT) == set()
    registry = get_rq_queue(CHAT).scheduled_job_registry
    redis_conn.zadd(registry.key, {str(job.pk): 1})  # due long ago
    assert scheduled_release_due() == [str(job.pk)]
    assert fair_waiting_ids(conn=redis_conn, queue=CHAT) == {str(job.pk)}
    assert redis_conn.llen(get_rq_queue(CHAT).key) == 0
    assert Job.fetch(str(job.pk), connection=redis_conn).get_status() == "queued"


@pytest.mark.parametrize("remove", [job_cancel, job_delete_from_redis])
def test_cancel_and_delete_take_a_waiting_job_out_of_its_line(redis_conn, remove):
    first, second = _step("G", "1"), _step("G", "2")
    remove(job=JobRecord.objects.get(pk=first.pk))
    assert fair_waiting_ids(conn=redis_conn, queue=CHAT) == {str(second.pk)}
    assert fair_pop(conn=redis_conn, queue=CHAT, worker="w").job_id == str(second.pk)
    assert fair_pop(conn=redis_conn, queue=CHAT, worker="w") is None


def test_ids_on_the_plain_list_move_into_their_tenants_lines(redis_conn, settings):
    settings.FAIR_QUEUES = []
    old = [_step("A", "a1"), _step("A", "a2"), _step("B", "b1")]
    high = _step("B", "b2", priority="high")
    redis_conn.rpush(get_rq_queue(CHAT).key, "not-a-ledger-id")
    settings.FAIR_QUEUES = [CHAT]
    assert fair_plain_drain(conn=redis_conn, queue=CHAT) == 5
    assert all(redis_conn.llen(get_rq_queue(CHAT, p).key) == 0 for p in ("high", "normal", "low"))
    pops = [fair_pop(conn=redis_conn, queue=CHAT, worker="w", cap=10) for _ in range(5)]
    assert [(p.job_id, p.tenant) for p in pops] == [
        (str(high.pk), "B"),
        (str(old[0].pk), "A"),
        (str(old[2].pk), "B"),
        ("not-a-ledger-id", "-"),
        (str(old[1].pk), "A"),
    ]


def test_depth_figures_count_the_tenants_lines(redis_conn):
    jobs = [_step("A", "a1"), _step("A", "a2"), _step("B", "b1", priority="low")]
    assert (
        fair_waiting_count(conn=redis_conn, queue=CHAT)
        == 3
        == queue_depths(redis_conn, with_workers=False)["queues"][CHAT]["queued"]
    )
    count, heads = fair_waiting_heads(conn=redis_conn, queue=CHAT)
    assert count == 3 and set(heads) == {str(jobs[0].pk), str(jobs[2].pk)}


def test_a_pushed_again_job_is_in_its_line_twice_and_runs_once(redis_conn):
    # The reconciler's re-push of a job it thinks lost: the second delivery is skipped by the runner.
    job = _step("G")
    job_push(job=JobRecord.objects.get(pk=job.pk))
    assert fair_waiting_count(conn=redis_conn, queue=CHAT) == 2


def test_a_full_chat_queue_refuses_submissions(user, make_api_client, settings):
    for i in range(3):
        _step("G", f"t{i}")
    settings.QUEUE_MAX_BACKLOG = 2
    response = make_api_client(user).post("/api/chat/bot", {"prompt": "hi"}, format="json")
    assert response.status_code == 503 and response.json()["error"] == "queue_full"
    assert response.json()["details"] == {"queue": "chat"}
