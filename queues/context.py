"""JobContext: what a running attempt may know about itself and record (progress, the fence).

Above the services and selectors it calls, below the runner that builds it; job definitions name it
only under TYPE_CHECKING.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from queues.definitions import JobCancelled
from queues.selectors import job_attempt_is_current
from queues.services import job_progress_set


class StopFlag:
    """Set once (by the runtime's fence watcher, from any thread), read by the job at every check. A plain
    attribute: under the GIL its write is seen by every thread, and it costs nothing to make per job (a
    threading.Event builds a Condition and a lock, a twentieth of a no-op job's CPU)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class JobContext:
    """What a running attempt may know about itself; passed to `run()`.

    Only the current attempt may record anything: progress is written only while the record is
    `started` in this attempt, and `check_cancelled()` raises JobCancelled once it is not (cancelled,
    handed to another worker, or superseded by cancel + retry). Under the worker runtime, `superseded`
    is set by the runtime's fence watcher (one query per process for every job in flight) and the checks
    cost nothing; elsewhere each check is one primary-key query.
    """

    job_id: str
    job_type: str
    queue: str
    attempt: int
    max_attempts: int
    owner_id: int | None
    request_id: str
    worker_name: str = ""
    superseded: StopFlag | None = field(default=None, repr=False, compare=False)
    # `await db(fn, *args, **kwargs)`: how an async job reaches the database (the runtime's bounded pool).
    db: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    def set_progress(self, progress: Any) -> None:
        job_progress_set(job_id=self.job_id, attempt=self.attempt, progress=progress)

    def is_current(self) -> bool:
        """Whether this attempt is still the one the ledger runs (synchronous; one query without the runtime)."""
        if self.superseded is not None:
            return not self.superseded.is_set()
        return job_attempt_is_current(job_id=self.job_id, attempt=self.attempt)

    def check_cancelled(self) -> None:
        """Raise JobCancelled if this attempt was cancelled or superseded while it ran."""
        if not self.is_current():
            raise JobCancelled(self.job_id)

    async def run_db(self, fn: Callable[..., Any], /, *args, **kwargs) -> Any:
        """Run a synchronous (ORM) call from an async job without blocking the event loop."""
        if self.db is not None:
            return await self.db(fn, *args, **kwargs)
        # Outside the runtime (a forking worker, a test): the caller's own thread and session.
        return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)

    async def acheck_cancelled(self) -> None:
        if self.superseded is not None:
            self.check_cancelled()
            return
        if not await self.run_db(self.is_current):
            raise JobCancelled(self.job_id)
