import time

import pytest
from prometheus_client import REGISTRY

from queues.constants import FINAL_STATUSES
from queues.models import JobRecord
from tests.fake_llm import FakeLLM


@pytest.fixture
def fake_llm(settings):
    """A real local OpenAI-compatible server; settings point the chat bot at it."""
    server = FakeLLM().start()
    settings.OPENAI_API_KEY = server.api_key
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_TIMEOUT = 2.0
    settings.OPENAI_STREAM_MAX_SECONDS = 10.0
    settings.CHAT_RETRY_ATTEMPTS = 3
    settings.CHAT_RETRY_BACKOFF = 1.0
    settings.LLM_BREAKER_FAILURES = 5
    settings.LLM_BREAKER_COOLDOWN = 30.0
    yield server
    server.stop()


@pytest.fixture
def drain(run_worker):
    """Run burst workers (retries wait in the scheduler) until the job reaches a final status."""

    def run(job, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run_worker()
            record = JobRecord.objects.get(pk=job.pk)
            if record.status in FINAL_STATUSES:
                return record
            time.sleep(0.1)
        raise AssertionError(f"job still {JobRecord.objects.get(pk=job.pk).status}")

    return run


@pytest.fixture
def metric():
    """The current value of a Prometheus sample (0 when never incremented)."""

    def read(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return read
