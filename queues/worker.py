"""Dotted paths kept for settings, the README and tests: the worker classes live in queues.workers."""

from queues.keys import (  # noqa: F401
    ALIVE_KEY,
    PAUSED_KEY,
    RECOVER_KEY,
    SLOTS_KEY,
    SUSPECT_KEY,
    alive_key,
    paused_key,
    slots_key,
    suspect_key,
)
from queues.workers.forking import (  # noqa: F401
    PAUSE_RECHECK_SECONDS,
    LedgerWorkerMixin,
    SlimySimpleWorker,
    SlimyWorker,
    expand_priorities,
    paused_queue_names,
)
from queues.workers.runtime import SlimyRuntimeWorker  # noqa: F401
