"""Redis keys of the worker side (liveness, recovery, pauses, the dashboard's slot counts)."""

from __future__ import annotations

ALIVE_KEY = "slimy:worker:alive:{}"  # per worker process, refreshed by its heartbeat thread
SUSPECT_KEY = "slimy:worker:suspect:{}"  # when the reconciler first missed the alive key (queues.reconcile)
# Jobs whose failure a worker could not write to the ledger (database down): "job_id worker_name" entries
# the reconciler hands to the retry policy once PostgreSQL answers again.
RECOVER_KEY = "slimy:recover"
PAUSED_KEY = "slimy:queue:paused:{}"
# The dashboard contract: a hash per runtime process with `host`, `pid` and, per queue, `{queue}:busy` and
# `{queue}:slots`; written on every heartbeat, expiring with the heartbeat TTL.
SLOTS_KEY = "slimy:worker:slots:{}"
# Held by the one runtime process whose in-process reconciler runs this pass (queues.workers.liveness).
RECONCILE_LOCK_KEY = "slimy:reconcile:lock"
HOOKS_LOCK_KEY = "slimy:reconcile:hooks-lock"


def alive_key(worker_name: str) -> str:
    return ALIVE_KEY.format(worker_name)


def suspect_key(worker_name: str) -> str:
    return SUSPECT_KEY.format(worker_name)


def paused_key(queue: str) -> str:
    """The Redis key whose presence pauses a queue (all its priority lists)."""
    return PAUSED_KEY.format(queue)


def slots_key(worker_name: str) -> str:
    return SLOTS_KEY.format(worker_name)
