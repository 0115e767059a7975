"""Dotted path kept for settings and scripts: the thread worker is now the worker runtime.

`SlimyThreadWorker` is the runtime (queues.workers.runtime) with every synchronous job on its queue's
thread pool; `threads=N` sets every queue's slots to N. Async jobs still run as coroutines.
"""

from __future__ import annotations

from queues.workers.runtime import SlimyRuntimeWorker


class SlimyThreadWorker(SlimyRuntimeWorker):
    blocking_all = True

    def __init__(self, *args, threads: int | None = None, concurrency: dict[str, int] | None = None, **kwargs):
        if concurrency is None:
            from django.conf import settings

            from queues.constants import QueueName

            concurrency = {name: threads or settings.WORKER_THREADS for name in QueueName.values}
        super().__init__(*args, concurrency=concurrency, **kwargs)
