"""Fair dequeue across tenants: round-robin within a priority, at most `cap` jobs in flight per tenant.

Used for the queues in FAIR_QUEUES: `job_push` pushes there (queues.services.fair), the worker runtime and
the forking worker pop and release. It knows job ids and tenant names, nothing about chat or the ledger.
Every change is one Lua script, so any number of worker processes share it without races.

Keys (`L` = an RQ list name such as `chat` or `chat.high`, `Q` = its base queue such as `chat`):
  slimy:fair:L:q:<tenant>  list   the tenant's waiting job ids, oldest first
  slimy:fair:L:ring        list   tenants with waiting jobs and a free slot, in turn order
  slimy:fair:L:parked      set    tenants with waiting jobs but every slot taken
  slimy:fair:Q:inflight    hash   tenant -> jobs popped and not yet released (shared by Q's priorities)
  slimy:fair:Q:held        hash   job id -> "tenant|worker|popped at": who holds which slot, for release
  slimy:fair:Q:wake        list   tokens that wake a waiting worker (bounded)
A tenant with waiting jobs is in exactly one of ring/parked for that priority. Tenant keys are built
inside the scripts (they are only known there): fine on one Redis, not on Redis Cluster.

The runtime's contract: pop → run (or skip: cancelled, already final) → release, always; and the
reconciler releases the slots of dead workers (fair_release_worker) and of records that are no longer
running (fair_held + fair_release). Left out: weights per tenant, and moving jobs between priorities.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from queues.connections import registered_script
from queues.constants import PRIORITY_ORDER, base_queue_name, rq_queue_name
from queues.keys import FAIR_PREFIX as PREFIX

WAKE_BOUND = 64  # more wake tokens than waiting workers are useless; a bounded list cannot grow forever


def _k(name: str, part: str) -> str:
    return f"{PREFIX}{name}:{part}"


# KEYS: tenant list of L, ring of L, parked of L, inflight of Q, wake of Q.
# ARGV: job id, tenant, cap, wake bound, "1" to put the job at the head of its tenant's line.
_PUSH = """
local n
if ARGV[5] == '1' then n = redis.call('LPUSH', KEYS[1], ARGV[1]) else n = redis.call('RPUSH', KEYS[1], ARGV[1]) end
if n == 1 then
  local inflight = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
  if inflight < tonumber(ARGV[3]) then
    redis.call('RPUSH', KEYS[2], ARGV[2])
  else
    redis.call('SADD', KEYS[3], ARGV[2])
  end
end
redis.call('RPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[4]), -1)
return n
"""

# KEYS: inflight of Q, held of Q, then (ring, parked) for each priority list in order.
# ARGV: cap, worker name, now, then the list name (L) for each priority in order.
_POP_HEAD = """
local cap = tonumber(ARGV[1])
local lists = (#KEYS - 2) / 2
"""
_POP_BODY = """
for i = 1, lists do
  local ring, parked, name = KEYS[1 + 2 * i], KEYS[2 + 2 * i], ARGV[3 + i]
  if redis.call('LLEN', ring) == 0 and redis.call('SCARD', parked) > 0 then
    -- the cap may have been raised since these tenants were parked
    for _, t in ipairs(redis.call('SMEMBERS', parked)) do
      if tonumber(redis.call('HGET', KEYS[1], t) or '0') < cap then
        redis.call('SREM', parked, t)
        redis.call('RPUSH', ring, t)
      end
    end
  end
  while true do
    local t = redis.call('LPOP', ring)
    if not t then break end
    local tq = 'slimy:fair:' .. name .. ':q:' .. t
    if tonumber(redis.call('HGET', KEYS[1], t) or '0') >= cap then
      redis.call('SADD', parked, t)
    else
      local job = redis.call('LPOP', tq)
      if job then
        -- Popped again while a dead (or superseded) holder's slot for it is still counted: that slot
        -- ends here, or it would leak when the holder's release finds the job held by its new worker.
        local prev = redis.call('HGET', KEYS[2], job)
        if prev then
          local pt = string.match(prev, '^(.-)|')
          if redis.call('HINCRBY', KEYS[1], pt, -1) <= 0 then redis.call('HDEL', KEYS[1], pt) end
        end
        local inflight = redis.call('HINCRBY', KEYS[1], t, 1)
        if redis.call('LLEN', tq) > 0 then
          -- back of the line: every other tenant waiting here gets a turn first
          if inflight < cap then redis.call('RPUSH', ring, t) else redis.call('SADD', parked, t) end
        end
        redis.call('HSET', KEYS[2], job, t .. '|' .. ARGV[2] .. '|' .. ARGV[3])
        return {job, t, name}
      end
    end
  end
end
return false
"""
_POP = _POP_HEAD + _POP_BODY
# The same pop, up to ARGV[4 + lists] times in one call (one script run, not one per job asked for: a
# worker with a thousand free slots asks for many, and most rounds find few waiting). Each pop is the one
# above; the answer is the list of what was popped, in order, until the first pop that finds nothing.
_POP_MANY = (
    _POP_HEAD
    + "local function pop()\n"
    + _POP_BODY
    + """end
local popped = {}
for _ = 1, tonumber(ARGV[4 + lists]) do
  local job = pop()
  if not job then break end
  popped[#popped + 1] = job
end
return popped
"""
)

# KEYS: inflight of Q, held of Q, wake of Q, then (ring, parked) for each priority list.
# ARGV: cap, wake bound, then job ids to release.  Returns how many slots were released.
_RELEASE_LIB = """
local function release(job, cap)
  local held = redis.call('HGET', KEYS[2], job)
  if not held then return 0 end
  redis.call('HDEL', KEYS[2], job)
  local t = string.match(held, '^(.-)|')
  local left = redis.call('HINCRBY', KEYS[1], t, -1)
  if left <= 0 then redis.call('HDEL', KEYS[1], t) end
  if left < cap then
    for i = 1, (#KEYS - 3) / 2 do
      if redis.call('SREM', KEYS[3 + 2 * i], t) == 1 then redis.call('RPUSH', KEYS[2 + 2 * i], t) end
    end
  end
  return 1
end
"""
_RELEASE = (
    _RELEASE_LIB
    + """
local cap, released = tonumber(ARGV[1]), 0
for i = 3, #ARGV do released = released + release(ARGV[i], cap) end
if released > 0 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[2]), -1)
end
return released
"""
)
# Same keys; ARGV: cap, wake bound, worker name.  Releases every slot that worker holds.
_RELEASE_WORKER = (
    _RELEASE_LIB
    + """
local cap, released = tonumber(ARGV[1]), 0
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local worker = string.match(held[i + 1], '^.-|(.*)|[^|]*$')
  if worker == ARGV[3] then released = released + release(held[i], cap) end
end
if released > 0 then
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[2]), -1)
end
return released
"""
)

# KEYS: tenant list, ring, parked of L. ARGV: job id, tenant.  Takes a waiting job out (cancel, delete).
_REMOVE = """
local removed = redis.call('LREM', KEYS[1], 0, ARGV[1])
if removed > 0 and redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('LREM', KEYS[2], 0, ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return removed
"""

# KEYS: inflight of Q, then (ring, parked) per priority.  ARGV: list name per priority.
# Returns {tenant, waiting, inflight, ...} for every tenant with waiting or running jobs.
_STATS = """
local figures, order = {}, {}
local function add(t, field, n)
  if not figures[t] then figures[t] = {0, 0}; order[#order + 1] = t end
  figures[t][field] = figures[t][field] + n
end
local inflight = redis.call('HGETALL', KEYS[1])
for i = 1, #inflight, 2 do add(inflight[i], 2, tonumber(inflight[i + 1])) end
for i = 1, #ARGV do
  local seen = {}
  for _, t in ipairs(redis.call('LRANGE', KEYS[2 * i], 0, -1)) do seen[t] = true end
  for _, t in ipairs(redis.call('SMEMBERS', KEYS[2 * i + 1])) do seen[t] = true end
  for t, _ in pairs(seen) do add(t, 1, redis.call('LLEN', 'slimy:fair:' .. ARGV[i] .. ':q:' .. t)) end
end
local out = {}
for _, t in ipairs(order) do
  out[#out + 1] = t; out[#out + 1] = figures[t][1]; out[#out + 1] = figures[t][2]
end
return out
"""

# KEYS: (ring, parked) per priority.  ARGV: list name per priority.  Returns how many jobs wait in the lines.
_WAITING = """
local n = 0
for i = 1, #ARGV do
  local seen = {}
  for _, t in ipairs(redis.call('LRANGE', KEYS[2 * i - 1], 0, -1)) do seen[t] = true end
  for _, t in ipairs(redis.call('SMEMBERS', KEYS[2 * i])) do seen[t] = true end
  for t, _ in pairs(seen) do n = n + redis.call('LLEN', 'slimy:fair:' .. ARGV[i] .. ':q:' .. t) end
end
return n
"""

_SOURCES = {
    "push": _PUSH,
    "pop": _POP,
    "pop_many": _POP_MANY,
    "release": _RELEASE,
    "release_worker": _RELEASE_WORKER,
    "remove": _REMOVE,
    "stats": _STATS,
    "waiting": _WAITING,
}


def _script(conn, name: str):
    """The script registered on this client (sync or asyncio: redis-py picks the matching class)."""
    return registered_script(conn, _SOURCES[name])


@dataclass(frozen=True)
class FairJob:
    job_id: str
    tenant: str
    priority: str


@dataclass(frozen=True)
class HeldSlot:
    job_id: str
    tenant: str
    worker: str
    since: float


@dataclass(frozen=True)
class TenantLoad:
    tenant: str
    waiting: int
    inflight: int


def _cap(cap: int | None) -> int:
    return settings.CHAT_TENANT_CONCURRENCY if cap is None else cap


def _priorities(priorities) -> list[str]:
    return list(PRIORITY_ORDER if priorities is None else priorities)


def _list_keys(queue: str, priorities: list[str]) -> list[str]:
    keys = []
    for priority in priorities:
        name = rq_queue_name(queue, priority)
        keys += [_k(name, "ring"), _k(name, "parked")]
    return keys


def _tenant(tenant: str) -> str:
    # "|" separates the fields of a held slot; an empty tenant still needs a turn of its own.
    return (tenant or "-").replace("|", "/")


# --- argument builders shared by the sync and asyncio entry points


def _push_call(queue, priority, tenant, job_id, cap, front=False):
    name = rq_queue_name(queue, priority)
    tenant = _tenant(tenant)
    return (
        [_k(name, "q:" + tenant), _k(name, "ring"), _k(name, "parked"), _k(queue, "inflight"), _k(queue, "wake")],
        [job_id, tenant, _cap(cap), WAKE_BOUND, "1" if front else "0"],
    )


def _pop_call(queue, worker, now, priorities, cap):
    priorities = _priorities(priorities)
    keys = [_k(queue, "inflight"), _k(queue, "held"), *_list_keys(queue, priorities)]
    return keys, [_cap(cap), worker, repr(now), *[rq_queue_name(queue, p) for p in priorities]]


def _pop_result(raw) -> FairJob | None:
    if not raw:
        return None
    job_id, tenant, name = (v.decode() if isinstance(v, bytes) else v for v in raw)
    priority = name.split(".", 1)[1] if "." in name else "normal"
    return FairJob(job_id=job_id, tenant=tenant, priority=priority)


def _release_keys(queue):
    return [_k(queue, "inflight"), _k(queue, "held"), _k(queue, "wake"), *_list_keys(queue, list(PRIORITY_ORDER))]


def _remove_call(queue, priority, tenant, job_id):
    name = rq_queue_name(queue, priority)
    tenant = _tenant(tenant)
    return [_k(name, "q:" + tenant), _k(name, "ring"), _k(name, "parked")], [job_id, tenant]


def _stats_call(queue):
    keys = [_k(queue, "inflight")] + _list_keys(queue, list(PRIORITY_ORDER))
    return keys, [rq_queue_name(queue, p) for p in PRIORITY_ORDER]


def _stats_result(raw) -> list[TenantLoad]:
    out = []
    for i in range(0, len(raw), 3):
        tenant = raw[i].decode() if isinstance(raw[i], bytes) else raw[i]
        out.append(TenantLoad(tenant=tenant, waiting=int(raw[i + 1]), inflight=int(raw[i + 2])))
    return out


def _now(conn_time) -> float:
    seconds, micros = conn_time
    return seconds + micros / 1e6


# --- sync API


def fair_push(
    *, conn, queue: str, priority: str, tenant: str, job_id: str, cap: int | None = None, front: bool = False
) -> int:
    """Make `job_id` wait for its tenant's turn (`front`: first in its tenant's line). Returns the tenant's
    waiting count in that priority."""
    keys, args = _push_call(base_queue_name(queue), priority, tenant, job_id, cap, front)
    return int(_script(conn, "push")(keys=keys, args=args))


def fair_push_many(*, conn, queue: str, items, cap: int | None = None, pipeline=None, front: bool = False) -> None:
    """Push many (priority, tenant, job id) in one round trip (a pipeline of the same script); with
    `pipeline`, the pushes are added to it (executed with the caller's other commands). `front`: each
    goes first in its tenant's line."""
    queue = base_queue_name(queue)
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=False)
    script = _script(pipe, "push")
    for priority, tenant, job_id in items:
        keys, args = _push_call(queue, priority, tenant, job_id, cap, front)
        script(keys=keys, args=args, client=pipe)
    if pipeline is None:
        with pipe:
            pipe.execute()


def fair_pop(*, conn, queue: str, worker: str, priorities=None, cap: int | None = None) -> FairJob | None:
    """The next job: highest priority first; within it, the next tenant in turn whose in-flight count is
    below `cap` (default CHAT_TENANT_CONCURRENCY). Takes one of that tenant's slots until fair_release."""
    keys, args = _pop_call(queue, worker, _now(conn.time()), priorities, cap)
    return _pop_result(_script(conn, "pop")(keys=keys, args=args))


def fair_release(*, conn, queue: str, job_ids, cap: int | None = None) -> int:
    """The jobs finished (or were skipped): free their tenants' slots. Idempotent; returns slots freed."""
    job_ids = [str(j) for j in job_ids]
    if not job_ids:
        return 0
    return int(_script(conn, "release")(keys=_release_keys(queue), args=[_cap(cap), WAKE_BOUND, *job_ids]))


def fair_release_worker(*, conn, queue: str, worker: str, cap: int | None = None) -> int:
    """A worker is confirmed dead: free every slot it held (its jobs go back to their retry policy)."""
    return int(_script(conn, "release_worker")(keys=_release_keys(queue), args=[_cap(cap), WAKE_BOUND, worker]))


def fair_remove(*, conn, queue: str, priority: str, tenant: str, job_id: str) -> bool:
    """Take a waiting job out of its tenant's line (cancelled or deleted before it ran)."""
    keys, args = _remove_call(base_queue_name(queue), priority, tenant, job_id)
    return bool(_script(conn, "remove")(keys=keys, args=args))


def fair_held(*, conn, queue: str) -> list[HeldSlot]:
    """Every slot currently taken, with its worker: what the reconciler checks against the ledger."""
    slots = []
    for job_id, value in conn.hgetall(_k(queue, "held")).items():
        job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
        value = value.decode() if isinstance(value, bytes) else value
        tenant, rest = value.split("|", 1)
        worker, _, since = rest.rpartition("|")
        slots.append(HeldSlot(job_id=job_id, tenant=tenant, worker=worker, since=float(since)))
    return slots


def fair_wake_key(queue: str) -> str:
    """The list a push or a release adds a token to: a worker may include it in its own blocking pop."""
    return _k(base_queue_name(queue), "wake")


def fair_waiting_count(*, conn, queue: str, pipeline=None) -> int | None:
    """How many jobs wait in `queue`'s tenant lines; with `pipeline`, the count is added to it (one reply)."""
    queue = base_queue_name(queue)
    keys, args = _list_keys(queue, list(PRIORITY_ORDER)), [rq_queue_name(queue, p) for p in PRIORITY_ORDER]
    if pipeline is not None:
        _script(pipeline, "waiting")(keys=keys, args=args, client=pipeline)
        return None
    return int(_script(conn, "waiting")(keys=keys, args=args))


def _lines(conn, queue: str) -> list[str]:
    """The keys of `queue`'s tenant lines that hold jobs (their tenants are in ring or parked)."""
    lines = []
    for priority in PRIORITY_ORDER:
        name = rq_queue_name(base_queue_name(queue), priority)
        tenants = set(conn.lrange(_k(name, "ring"), 0, -1)) | set(conn.smembers(_k(name, "parked")))
        lines += [_k(name, "q:" + (t.decode() if isinstance(t, bytes) else t)) for t in tenants]
    return lines


def fair_waiting_ids(*, conn, queue: str) -> set[str]:
    """Every job id waiting in `queue`'s tenant lines (all priorities): what the reconciler checks the
    ledger against."""
    lines = _lines(conn, queue)
    if not lines:
        return set()
    with conn.pipeline(transaction=False) as pipe:
        for key in lines:
            pipe.lrange(key, 0, -1)
        return {v.decode() if isinstance(v, bytes) else v for ids in pipe.execute() for v in ids}


def fair_waiting_heads(*, conn, queue: str) -> tuple[int, list[str]]:
    """How many jobs wait in `queue`'s tenant lines, and the first id of every line (the oldest waiting
    job is among them): what queue depth and age figures read for a fair-shared queue."""
    lines = _lines(conn, queue)
    if not lines:
        return 0, []
    with conn.pipeline(transaction=False) as pipe:
        for key in lines:
            pipe.llen(key)
            pipe.lindex(key, 0)
        answers = pipe.execute()
    heads = [h.decode() if isinstance(h, bytes) else h for h in answers[1::2] if h]
    return sum(int(n) for n in answers[0::2]), heads


def fair_wait(*, conn, queue: str, timeout: float) -> bool:
    """Block up to `timeout` s for a push or a release on `queue`; True when woken. Keep `timeout` below
    the client's socket timeout (redis-py raises on blocking calls longer than it)."""
    return conn.blpop([_k(queue, "wake")], timeout=timeout) is not None


def fair_tenant_loads(*, conn, queue: str) -> list[TenantLoad]:
    keys, args = _stats_call(queue)
    return _stats_result(_script(conn, "stats")(keys=keys, args=args))


# --- asyncio twins (a `redis.asyncio.Redis` client): same scripts, same keys


async def afair_push(*, conn, queue: str, priority: str, tenant: str, job_id: str, cap: int | None = None) -> int:
    keys, args = _push_call(base_queue_name(queue), priority, tenant, job_id, cap)
    return int(await _script(conn, "push")(keys=keys, args=args))


async def afair_pop(*, conn, queue: str, worker: str, priorities=None, cap: int | None = None) -> FairJob | None:
    keys, args = _pop_call(queue, worker, _now(await conn.time()), priorities, cap)
    return _pop_result(await _script(conn, "pop")(keys=keys, args=args))


async def afair_pop_many(
    *, conn, queue: str, worker: str, count: int, priorities=None, cap: int | None = None
) -> list[FairJob]:
    """Up to `count` jobs in one round trip and one script run (the pops stop at the first that finds nothing)."""
    if count <= 0:
        return []
    keys, args = _pop_call(queue, worker, _now(await conn.time()), priorities, cap)
    answers = await _script(conn, "pop_many")(keys=keys, args=[*args, count])
    return [job for job in map(_pop_result, answers or []) if job is not None]


async def afair_release(*, conn, queue: str, job_ids, cap: int | None = None) -> int:
    job_ids = [str(j) for j in job_ids]
    if not job_ids:
        return 0
    return int(await _script(conn, "release")(keys=_release_keys(queue), args=[_cap(cap), WAKE_BOUND, *job_ids]))


async def afair_wait(*, conn, queue: str, timeout: float) -> bool:
    return (await conn.blpop([_k(queue, "wake")], timeout=timeout)) is not None


# --- metrics: bounded label cardinality


def tenant_loads_top(loads: list[TenantLoad], *, top: int) -> list[TenantLoad]:
    """The `top` busiest tenants (waiting + in flight) by name, the rest summed as "other"."""
    ranked = sorted(loads, key=lambda load: (-(load.waiting + load.inflight), load.tenant))
    head, tail = ranked[:top], ranked[top:]
    if tail:
        head.append(
            TenantLoad(tenant="other", waiting=sum(t.waiting for t in tail), inflight=sum(t.inflight for t in tail))
        )
    return head
