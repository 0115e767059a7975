"""Event streams on the web server `make run` starts (gunicorn + uvicorn workers, slimy_site.asgi), as a real
process, with many clients at once.

Jobs here are ledger rows owned by the test user whose output is written the way a worker writes it
(queues.output's writer) and whose state changes are written to the ledger row, so that dozens of
replies can be in flight at once without dozens of workers.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
import urllib.request

import psutil
import pytest
import redis

from queues.models import JobRecord
from queues.output import output_key, output_writer_open
from queues.services import job_enqueue
from slimy_site.runall import web_child
from slimy_site.services import api_token_issue
from tests.chat.sse import Event, LiveStream, only, parse
from tests.processes import Proc, process_env, wait_for
from tests.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "metrics-token-for-tests"


@pytest.fixture
def web(redis_server, tmp_path):
    """The `make run` web server, one process, on the test database and Redis."""
    started = []

    def start(**env):
        port = free_port()
        argv = web_child(host="127.0.0.1", port=port, python=sys.executable, processes=1).argv
        proc = Proc(
            argv, process_env(redis_server.url, METRICS_TOKEN=METRICS_TOKEN, **env), tmp_path / f"web-{port}.log"
        )
        started.append(proc)
        wait_for(lambda: _status(port, "/health/live") == 200, timeout=60, message="the web server to answer")
        proc.port = port
        return proc

    yield start
    for proc in started:
        proc.stop()


def _status(port, path, headers=None, timeout=5) -> int | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _get_json(port, path, token):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", path, headers={"Authorization": f"Token {token}", "Accept": "text/event-stream"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, json.loads(body), response


def _job(user):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
    JobRecord.objects.filter(pk=job.pk).update(status="started", attempts=1)
    return job


def _finish(job, reply):
    JobRecord.objects.filter(pk=job.pk).update(status="completed", result={"reply": reply})


def _open_streams(port, token, jobs, **kwargs) -> list[LiveStream]:
    streams = []
    for job in jobs:
        stream = LiveStream(port, f"/api/jobs/{job.pk}/events", token, **kwargs)
        assert stream.response.status == 200
        streams.append(stream)
    return streams


def _redis_connections(pid: int, redis_port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
    )


def _worker_pid(proc) -> int:
    children = psutil.Process(proc.pid).children()
    assert len(children) == 1
    return children[0].pid


def _metric(port, name) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sixty_watchers_get_every_chunk_once_in_order_from_one_process(user, web, redis_server, redis_conn):
    server = web(JOB_EVENTS_HEARTBEAT="1", API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(60)]
    streams = _open_streams(server.port, token, jobs, timeout=30)
    chunks = [f"t{i} " for i in range(12)]
    received: dict[int, list] = {i: [] for i in range(len(jobs))}
    errors = []

    def read(i):
        try:
            while (event := streams[i].next()) is not None:
                received[i].append(event)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(jobs))]
    for thread in readers:
        thread.start()
    writers = [output_writer_open(job_id=str(job.pk), job_type="test_echo", attempt=1) for job in jobs]

    # While 60 streams are open: the other routes answer, and the process holds few Redis connections.
    assert _status(server.port, "/health/live") == 200
    assert _redis_connections(_worker_pid(server), redis_server.port) <= 10
    assert _metric(server.port, "slimy_web_open_streams") == 60

    for chunk in chunks:
        for writer in writers:
            writer.write(chunk)
        time.sleep(0.02)
    for job, writer in zip(jobs, writers):
        writer.close()
        _finish(job, "".join(chunks))
    for thread in readers:
        thread.join(30)
    assert not errors, errors
    for i in range(len(jobs)):
        events = [e for e in received[i] if isinstance(e, Event)]
        assert [e.data["text"] for e in only(events, "chunk")] == chunks, i
        assert len(only(events, "segment")) == 1
        assert events[0].kind == "state" and events[0].data["status"] == "started"
        assert events[-1].kind == "state" and events[-1].data["status"] == "completed"
        ids = [e.id for e in events[:-1] if e.kind != "state"]
        assert len(set(ids)) == len(ids) == 13
    for stream in streams:
        stream.close()
    wait_for(lambda: _metric(server.port, "slimy_web_open_streams") == 0, timeout=10, message="the gauge to drop")
    # Sixty streams ending at once give their per-user slots back too.
    wait_for(lambda: redis_conn.zcard(f"slimy:streams:user:{user.pk}") == 0, timeout=10, message="slots released")


def test_reconnects_with_last_event_id_resume_without_gaps_or_repeats(user, web):
    server = web(API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(20)]
    writers = [output_writer_open(job_id=str(job.pk), job_type="test_echo", attempt=1) for job in jobs]
    for writer in writers:
        for i in range(5):
            writer.write(f"a{i}")
    first = _open_streams(server.port, token, jobs)
    last_ids = []
    for stream in first:
        seen = []
        while len(only(seen, "chunk")) < 3:
            seen.append(stream.next())
        last_ids.append(only(seen, "chunk")[-1].id)
        stream.close()
    for job, writer in zip(jobs, writers):
        for i in range(5, 8):
            writer.write(f"a{i}")
        writer.close()
        _finish(job, "done")
    for job, last_id in zip(jobs, last_ids):
        stream = LiveStream(server.port, f"/api/jobs/{job.pk}/events", token, last_event_id=last_id)
        events = []
        while (event := stream.next()) is not None:
            events.append(event)
        stream.close()
        assert [e.data["text"] for e in only(events, "chunk")] == ["a3", "a4", "a5", "a6", "a7"]
        assert only(events, "state")[-1].data["status"] == "completed"


def test_per_user_cap_and_a_disconnect_frees_its_slot_at_once(user, other_user, web):
    # Heartbeats every 300 s: a closed client is noticed by the server, not by a failed heartbeat write.
    server = web(API_MAX_STREAMS_PER_USER="3", JOB_EVENTS_HEARTBEAT="300", JOB_EVENTS_MAX_SECONDS="300")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(4)]
    streams = _open_streams(server.port, token, jobs[:3])
    for stream in streams:
        assert stream.next().kind == "state"
    status, body, response = _get_json(server.port, f"/api/jobs/{jobs[3].pk}/events", token)
    assert status == 429
    assert body["ok"] is False and body["error"] == "too_many_streams"
    assert body["details"] == {"limit": 3, "scope": "user"}
    assert response.headers["Retry-After"]
    # Another user is not affected by alice's streams.
    other_token = api_token_issue(user=other_user)
    other_job = _job(other_user)
    [other] = _open_streams(server.port, other_token, [other_job])
    other.close()

    streams[0].close()

    def opens():
        stream = LiveStream(server.port, f"/api/jobs/{jobs[3].pk}/events", token)
        if stream.response.status == 200:
            streams.append(stream)
            return True
        stream.response.read()
        stream.close()
        time.sleep(0.1)
        return False

    wait_for(opens, timeout=10, message="the closed stream's slot to be free")
    assert "the client went away" in server.output()
    for stream in streams:
        stream.close()


def test_per_process_cap(user, other_user, web):
    server = web(API_MAX_STREAMS_PER_PROCESS="2")
    token = api_token_issue(user=user)
    other_token = api_token_issue(user=other_user)
    streams = _open_streams(server.port, token, [_job(user)])
    streams += _open_streams(server.port, other_token, [_job(other_user)])
    status, body, _ = _get_json(server.port, f"/api/jobs/{_job(user).pk}/events", token)
    assert status == 429 and body["error"] == "too_many_streams" and body["details"]["scope"] == "process"
    for stream in streams:
        stream.close()


def test_owner_only_and_request_ids(user, other_user, web):
    server = web()
    job = _job(user)
    other_token = api_token_issue(user=other_user)
    status, body, _ = _get_json(server.port, f"/api/jobs/{job.pk}/events", other_token)
    assert status == 404 and body["error"] == "job_not_found"
    status, body, _ = _get_json(server.port, f"/api/jobs/{job.pk}/events", "not-a-token")
    assert status == 401
    token = api_token_issue(user=user)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(
        "GET",
        f"/api/jobs/{job.pk}/events",
        headers={"Authorization": f"Token {token}", "X-Request-ID": "stream-request-0001"},
    )
    response = conn.getresponse()
    assert response.status == 200 and response.headers["X-Request-ID"] == "stream-request-0001"
    response.readline()
    conn.close()
    wait_for(lambda: "client went away" in server.output(), timeout=10, message="the disconnect to be logged")
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    went_away = [line for line in lines if "client went away" in line["message"]]
    assert went_away[-1]["request_id"] == "stream-request-0001"
    assert went_away[-1]["job_id"] == str(job.pk)


def test_shutdown_tells_open_streams_to_reconnect(user, web):
    server = web(JOB_EVENTS_MAX_SECONDS="300", JOB_EVENTS_HEARTBEAT="300", API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(20)]
    streams = _open_streams(server.port, token, jobs)
    for stream in streams:
        assert stream.next().kind == "state"
    server.signal(signal.SIGTERM)
    endings = []
    for stream in streams:
        events = []
        while (event := stream.next()) is not None:
            events.append(event)
        endings.append(events[-1] if events else None)
    # Every stream ended with the reconnect hint (whole events only: the parser saw no torn one).
    assert endings == [": server restarting; reconnect with Last-Event-ID"] * len(streams)
    assert server.wait(20) == 0


def _follow(port, token, job, *, outcome, last_id=None):
    """Read a job's events as EventSource does: reconnect with Last-Event-ID until the final state."""
    try:
        while True:
            stream = LiveStream(port, f"/api/jobs/{job.pk}/events", token, last_event_id=last_id, timeout=30)
            assert stream.response.status == 200, stream.response.status
            outcome["connections"] += 1
            try:
                while (event := stream.next()) is not None:
                    if not isinstance(event, Event):
                        outcome["comments"].append(event)
                        continue
                    outcome["events"].append(event)
                    last_id = event.id or last_id
                    if event.kind == "state" and event.data["status"] in ("completed", "failed", "cancelled"):
                        return
            finally:
                stream.close()
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        outcome["error"] = exc


def test_streams_end_at_their_time_limit_and_resume_without_gaps_or_repeats(user, web):
    # Heartbeats every 300 s: a stream with nothing to send still ends at its time limit.
    server = web(JOB_EVENTS_MAX_SECONDS="1", JOB_EVENTS_HEARTBEAT="300", API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(20)]
    idle = _job(user)  # writes nothing until the end
    outcomes = {job.pk: {"connections": 0, "events": [], "comments": [], "error": None} for job in [*jobs, idle]}
    followers = [
        threading.Thread(target=_follow, args=(server.port, token, job), kwargs={"outcome": outcomes[job.pk]})
        for job in [*jobs, idle]
    ]
    for thread in followers:
        thread.start()
    writers = [output_writer_open(job_id=str(job.pk), job_type="test_echo", attempt=1) for job in jobs]
    chunks = [f"c{i} " for i in range(25)]
    for chunk in chunks:  # 2.5 s or more of output: every stream meets its 1-s limit at least once
        for writer in writers:
            writer.write(chunk)
        time.sleep(0.1)
    wait_for(lambda: outcomes[idle.pk]["connections"] >= 2, timeout=30, message="the idle stream to be renewed")
    for job, writer in zip(jobs, writers):
        writer.close()
        _finish(job, "done")
    _finish(idle, "")
    for thread in followers:
        thread.join(60)
    limit_hint = ": stream time limit reached; reconnect with Last-Event-ID"
    for job in jobs:
        outcome = outcomes[job.pk]
        assert outcome["error"] is None, outcome["error"]
        assert outcome["connections"] >= 2 and limit_hint in outcome["comments"]
        assert [e.data["text"] for e in only(outcome["events"], "chunk")] == chunks
        assert len(only(outcome["events"], "segment")) == 1
        assert outcome["events"][-1].data["status"] == "completed"
    assert outcomes[idle.pk]["error"] is None and limit_hint in outcomes[idle.pk]["comments"]
    assert outcomes[idle.pk]["events"][-1].data["status"] == "completed"
    wait_for(lambda: _metric(server.port, "slimy_web_open_streams") == 0, timeout=10, message="the gauge to drop")


def _reader_keys(monitor, deadline) -> set[str] | None:
    """The output logs named by the next XREAD the web process's reader sends (None: none before the deadline)."""
    while time.monotonic() < deadline:
        try:
            command = monitor.next_command()
        except TimeoutError:
            return None
        words = command["command"].split()
        if words and words[0].upper() == "XREAD" and "BLOCK" in (w.upper() for w in words):
            streams = words[[w.upper() for w in words].index("STREAMS") + 1 :]
            return set(streams[: len(streams) // 2])
    return None


def test_a_client_that_goes_away_gives_back_its_slot_and_its_place_in_the_read_at_once(
    user, web, redis_server, redis_conn
):
    # Heartbeats every 300 s: only the server hearing the disconnect can free anything within the test.
    server = web(JOB_EVENTS_HEARTBEAT="300", JOB_EVENTS_MAX_SECONDS="300", API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(30)]
    streams = _open_streams(server.port, token, jobs)
    for stream in streams:
        assert stream.next().kind == "state"
    keys = {output_key(job.pk) for job in jobs}
    assert redis_conn.zcard(f"slimy:streams:user:{user.pk}") == 30
    gone = {output_key(job.pk) for job in jobs[:10]}
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    with client.monitor() as monitor:
        deadline = time.monotonic() + 10
        # The reader names every watched log in its reads...
        while (read := _reader_keys(monitor, deadline)) is not None and read != keys:
            pass
        assert read == keys
        for stream in streams[:10]:
            stream.close()
        # ...and, once those clients are gone, only the others'.
        while (read := _reader_keys(monitor, deadline)) is not None and read != keys - gone:
            pass
        assert read == keys - gone
    wait_for(lambda: redis_conn.zcard(f"slimy:streams:user:{user.pk}") == 20, timeout=10, message="slots released")
    assert _metric(server.port, "slimy_web_open_streams") == 20
    for stream in streams[10:]:
        stream.close()


def test_shutdown_while_replies_stream_ends_each_after_a_whole_event_and_another_process_resumes_them(user, web):
    server = web(JOB_EVENTS_MAX_SECONDS="300", JOB_EVENTS_HEARTBEAT="300", API_MAX_STREAMS_PER_USER="100")
    token = api_token_issue(user=user)
    jobs = [_job(user) for _ in range(20)]
    writers = [output_writer_open(job_id=str(job.pk), job_type="test_echo", attempt=1) for job in jobs]
    streams = _open_streams(server.port, token, jobs)
    bodies, errors = {}, []

    def read_all(i):  # the raw body to its end: a torn event or chunk would show here
        try:
            bodies[i] = streams[i].response.read().decode()
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    readers = [threading.Thread(target=read_all, args=(i,)) for i in range(len(jobs))]
    for thread in readers:
        thread.start()
    written = 0
    for n in range(400):  # tokens keep coming while the server stops
        for writer in writers:
            writer.write(f"w{n} ")
        written = n + 1
        if n == 20:
            server.signal(signal.SIGTERM)
        if n > 20 and not any(thread.is_alive() for thread in readers):
            break
        time.sleep(0.01)
    for thread in readers:
        thread.join(30)
    assert not errors, errors
    assert server.wait(20) == 0
    resumed = web(JOB_EVENTS_MAX_SECONDS="300", JOB_EVENTS_HEARTBEAT="300", API_MAX_STREAMS_PER_USER="100")
    for job, writer in zip(jobs, writers):
        writer.close()
        _finish(job, "done")
    expected = [f"w{n} " for n in range(written)]
    for i, job in enumerate(jobs):
        events = parse(bodies[i].splitlines(keepends=True))
        assert events[-1] == ": server restarting; reconnect with Last-Event-ID"
        assert bodies[i].endswith("\n\n")
        last_id = [e for e in events if isinstance(e, Event) and e.id][-1].id
        outcome = {"connections": 0, "events": [], "comments": [], "error": None}
        _follow(resumed.port, token, job, outcome=outcome, last_id=last_id)
        assert outcome["error"] is None, outcome["error"]
        texts = [e.data["text"] for e in only(events, "chunk")] + [
            e.data["text"] for e in only(outcome["events"], "chunk")
        ]
        assert texts == expected, i
