"""GET /api/jobs/<id>/events: state changes and chunks as Server-Sent Events, resumable, ending final.

The first tests read the stream through Django's test client; the last ones run the production web
server (the one `make run` starts) as a real process and read it over a socket while a worker streams
the reply, including a reconnect with Last-Event-ID in the middle. More under many clients:
tests/queues/test_event_streams_server.py.
"""

import sys
import threading
import urllib.request

import pytest

from queues.models import JobRecord
from queues.output import FLUSH_SECONDS
from queues.services import job_enqueue
from slimy_site.runall import web_child
from slimy_site.services import api_token_issue
from tests.chat.sse import Event, LiveStream, events_of, only
from tests.fake_llm import Behaviour
from tests.processes import Proc, process_env, wait_for
from tests.redis_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)

# The output log coalesces tokens arriving within FLUSH_SECONDS into one entry; spaced further apart,
# each token is an entry of its own, which is what these tests follow event by event.
SPACED = FLUSH_SECONDS + 0.03


def _ask(user, prompt="stream please"):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt}, owner=user)


def test_finished_job_streams_its_chunks_then_the_final_state(fake_llm, user, make_api_client, drain):
    fake_llm.then(Behaviour(chunks=["Once", " upon", " a time"], delay_per_chunk=SPACED))
    job = drain(_ask(user))
    response = make_api_client(user).get(f"/api/jobs/{job.pk}/events", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    events = [e for e in events_of(response) if isinstance(e, Event)]
    kinds = [e.kind for e in events]  # tokens within the coalescing window may share a chunk
    assert kinds[0] == "segment" and kinds[-1] == "state" and set(kinds[1:-1]) == {"chunk"}
    assert "".join(e.data["text"] for e in only(events, "chunk")) == "Once upon a time"
    final = events[-1]
    assert final.data["status"] == "completed"
    assert final.data["result"]["reply"] == "Once upon a time"
    # Every event carries a cursor; the final state carries the last chunk's.
    assert final.id == events[-2].id
    assert len({e.id for e in events[:-1]}) == len(events) - 1


def test_last_event_id_resumes_after_that_event(fake_llm, user, make_api_client, drain):
    fake_llm.then(Behaviour(chunks=["a", "b", "c", "d"], delay_per_chunk=SPACED))
    job = drain(_ask(user))
    client = make_api_client(user)
    first = [e for e in events_of(client.get(f"/api/jobs/{job.pk}/events")) if isinstance(e, Event)]
    chunks = only(first, "chunk")
    assert "".join(c.data["text"] for c in chunks) == "abcd" and len(chunks) >= 2
    # Resuming after the first entry: exactly the entries after it (tokens may share an entry).
    rest = [c.data["text"] for c in chunks[1:]]
    resumed = events_of(client.get(f"/api/jobs/{job.pk}/events", HTTP_LAST_EVENT_ID=chunks[0].id))
    assert [e.data.get("text") for e in only(resumed, "chunk")] == rest
    assert only(resumed, "state")[-1].data["status"] == "completed"
    # `?after=` does the same for clients that cannot set headers
    resumed = events_of(client.get(f"/api/jobs/{job.pk}/events", {"after": chunks[0].id}))
    assert [e.data.get("text") for e in only(resumed, "chunk")] == rest


def test_bad_last_event_id_is_a_400(user, make_api_client):
    job = _ask(user)
    response = make_api_client(user).get(f"/api/jobs/{job.pk}/events", HTTP_LAST_EVENT_ID="garbage")
    assert response.status_code == 400 and response.json()["error"] == "invalid_cursor"


def test_stream_of_a_waiting_job_heartbeats_and_stops_at_the_time_limit(user, make_api_client, settings):
    settings.JOB_EVENTS_HEARTBEAT = 0.5
    settings.JOB_EVENTS_MAX_SECONDS = 1.2
    job = _ask(user)  # no worker runs: it stays queued
    events = events_of(make_api_client(user).get(f"/api/jobs/{job.pk}/events"))
    states = only(events, "state")
    assert [s.data["status"] for s in states] == ["queued"]
    assert ": keep-alive" in events
    assert events[-1].startswith(": stream time limit reached")


def test_failed_job_ends_with_its_error(user, make_api_client, run_worker):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "x"}, owner=user)
    run_worker()
    events = events_of(make_api_client(user).get(f"/api/jobs/{job.pk}/events"))
    final = only(events, "state")[-1]
    assert final.data["status"] == "failed"
    assert final.data["error"] == {"code": "never_works", "message": "this can never work"}


# --- under the production web server


@pytest.fixture
def web(redis_server, tmp_path):
    """The web server `make run` starts (gunicorn + uvicorn workers), one process, on the test database and Redis."""
    started = []

    def start(threads=4, **env):
        port = free_port()
        argv = web_child(host="127.0.0.1", port=port, python=sys.executable, processes=1).argv
        proc = Proc(
            argv,
            process_env(redis_server.url, JOB_EVENTS_HEARTBEAT="0.5", WEB_THREADS=str(threads), **env),
            tmp_path / f"web-{port}.log",
        )
        started.append(proc)
        wait_for(lambda: _live(port), timeout=30, message="the web server to answer")
        return port

    yield start
    for proc in started:
        proc.stop()


def _live(port) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.e2e
def test_live_stream_under_the_web_server_with_a_reconnect_in_the_middle(fake_llm, user, run_worker, web):
    port = web(threads=4)
    token = api_token_issue(user=user)
    fake_llm.then(
        Behaviour(chunks=["one ", "two ", "three ", "four ", "five ", "six"], hold_after=3, delay_per_chunk=SPACED)
    )
    job = _ask(user)
    path = f"/api/jobs/{job.pk}/events"
    seen = {"first": [], "second": [], "error": None}

    def watch():
        try:
            stream = LiveStream(port, path, token)
            assert stream.response.status == 200
            while "".join(e.data["text"] for e in only(seen["first"], "chunk")) != "one two three ":
                event = stream.next()
                assert event is not None, "stream ended early"
                seen["first"].append(event)
            stream.close()  # the client goes away in the middle of the reply
            last_id = only(seen["first"], "chunk")[-1].id
            stream = LiveStream(port, path, token, last_event_id=last_id)
            first = stream.next()
            seen["second"].append(first)
            fake_llm.release()  # the provider goes on only once we are reconnected
            while (event := stream.next()) is not None:
                seen["second"].append(event)
            stream.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            seen["error"] = exc
        finally:
            fake_llm.release()

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_worker()  # the reply streams while the watcher reads it through gunicorn
    watcher.join(30)
    assert seen["error"] is None, seen["error"]

    first, second = seen["first"], seen["second"]
    states = [e.data["status"] for e in only(first, "state")]
    assert states[-1] == "started"
    assert "".join(e.data["text"] for e in only(first, "chunk")) == "one two three "
    # After the reconnect: the current state, then exactly the text not seen yet, then the end.
    assert isinstance(second[0], Event) and second[0].kind == "state" and second[0].data["status"] == "started"
    assert "".join(e.data["text"] for e in only(second, "chunk")) == "four five six"
    final = [e for e in second if isinstance(e, Event)][-1]
    assert final.kind == "state" and final.data["status"] == "completed"
    assert final.data["result"]["reply"] == "one two three four five six"
    assert JobRecord.objects.get(pk=job.pk).status == "completed"


@pytest.mark.e2e
def test_open_streams_hold_no_server_thread(user, web):
    port = web(threads=1, JOB_EVENTS_MAX_SECONDS="300")
    token = api_token_issue(user=user)
    jobs = [_ask(user) for _ in range(16)]  # they stay queued: each stream would run for 300 s
    streams = [LiveStream(port, f"/api/jobs/{job.pk}/events", token) for job in jobs]
    for stream in streams:
        assert isinstance(stream.next(), Event)
    # Under gthread 16 open streams took every thread; here the one thread for other routes is free.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/jobs/{jobs[0].pk}/output", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    for stream in streams:
        stream.close()
