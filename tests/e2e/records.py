"""What the ledger and the test jobs' Redis lists say about a job (shared by the runtime's e2e tests)."""

from queues.models import JobRecord


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def _status(job):
    return _record(job).status


def _started(redis_conn, tag):
    return [e.decode() for e in redis_conn.lrange(f"test:started:{tag}", 0, -1)]


def _outcomes(job):
    return [a.outcome for a in _record(job).attempt_history.order_by("number")]
