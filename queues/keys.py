"""Every Redis key name the job system writes (RQ's own keys are RQ's: `rq:*`, built by RQ's classes).

Chat and audit name their own keys in their apps (chat.quotas, chat.budget, chat.breaker,
audit.services), all under `slimy:`. A Lua script that spells a prefix itself says so next to it.
"""

from __future__ import annotations

ALIVE_KEY = "slimy:worker:alive:{}"  # per worker process, refreshed by its heartbeat thread
SUSPECT_KEY = "slimy:worker:suspect:{}"  # when the reconciler first missed the alive key (queues.reconcile)
# Jobs whose failure a worker could not write to the ledger (database down): "job_id worker_name" entries
# the reconciler hands to the retry policy once PostgreSQL answers again.
RECOVER_KEY = "slimy:recover"
PAUSED_KEY = "slimy:queue:paused:{}"
# Published (the queue's name) after a pause or resume: runtime workers re-read the paused keys at once.
PAUSE_CHANNEL = "slimy:queue:paused-changed"
# The dashboard contract: a hash per runtime process with `host`, `pid` and, per queue, `{queue}:busy` and
# `{queue}:slots`; written on every heartbeat, expiring with the heartbeat TTL.
SLOTS_KEY = "slimy:worker:slots:{}"
# Held by the one runtime process whose in-process reconciler runs this pass (queues.workers.liveness).
RECONCILE_LOCK_KEY = "slimy:reconcile:lock"
HOOKS_LOCK_KEY = "slimy:reconcile:hooks-lock"

# A job's output log (a stream) and its fence: the newest attempt allowed to write it (queues.output).
OUTPUT_KEY = "slimy:job:{}:output"
OUTPUT_FENCE_KEY = "slimy:job:{}:attempt"
# Fair-share state per queue (tenant lists, ring, parked, in-flight, wake tokens): queues.fairness.
# Its Lua scripts build per-tenant keys with this prefix too.
FAIR_PREFIX = "slimy:fair:"
# Finished-job counts per 10 s bucket, the metrics snapshot's throughput (queues.metrics).
THROUGHPUT_KEY = "slimy:metrics:finished:{}"
# The accepted-response body of an idempotent submission, replayed to a retry (queues.api.submit).
IDEMPOTENCY_REPLAY_KEY = "slimy:idempotency:body:{job_id}"
# GCRA state per scope and client: "<prefix>:<scope>:<ident>" (queues.api.throttling).
RATELIMIT_PREFIX = "slimy:ratelimit"
# A sorted set per user of the event streams it holds open (queues.api.stream_limits).
STREAM_SLOTS_KEY = "slimy:streams:user:{}"


def alive_key(worker_name: str) -> str:
    return ALIVE_KEY.format(worker_name)


def suspect_key(worker_name: str) -> str:
    return SUSPECT_KEY.format(worker_name)


def paused_key(queue: str) -> str:
    """The Redis key whose presence pauses a queue (all its priority lists)."""
    return PAUSED_KEY.format(queue)


def slots_key(worker_name: str) -> str:
    return SLOTS_KEY.format(worker_name)
