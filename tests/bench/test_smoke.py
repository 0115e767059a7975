"""Each benchmark scenario runs end to end in smoke mode (tiny sizes): the scripts stay alive.

No assertion on speed: only that the command writes the expected JSON with positive figures, each
beside a baseline measured in the same run, and appends its line to the results README.
"""

import json

import pytest
from django.core.management import call_command

from bench.harness import check_results_structure
from bench.scenarios import SCENARIOS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXPECTED_FIGURES = {
    "throughput": {"SlimySimpleWorker (stock) database", "SlimyBatchWorker database", "SlimyBatchWorker chat",
                   "SlimyBatchWorker audit"},
    "audit-ingest": {"audit_event_record -> rows", "bulk jobs (1,000 events) -> rows",
                     "audit_event_record -> rows vs COPY", "bulk jobs (1,000 events) -> rows vs COPY"},
    "pickup": {"SlimyBatchWorker p50", "SlimyBatchWorker p99", "SlimyBatchWorker p99 after 0.3 s idle",
               "SlimySimpleWorker (stock) p50", "SlimySimpleWorker (stock) p99",
               "SlimySimpleWorker (stock) p99 after 0.3 s idle"},
    "submit": {"POST submissions", "POST p50", "POST p99"},
    "stream": {"first token -> first SSE event p50", "first token -> first SSE event p99"},
    "chat-concurrency": {"jobs/s at 2 simultaneous", "worker memory at 2 simultaneous", "jobs/s at 6 simultaneous",
                         "worker memory at 6 simultaneous"},
}


def test_every_scenario_has_a_smoke_expectation():
    assert set(SCENARIOS) == set(EXPECTED_FIGURES)


@pytest.mark.parametrize("scenario", sorted(EXPECTED_FIGURES))
def test_scenario_smoke_run_writes_results(scenario, tmp_path, redis_server):
    call_command("bench", scenario, "--smoke", "--use-current-database", "--redis-url", redis_server.url,
                 "--out", str(tmp_path))
    data = json.loads((tmp_path / f"{scenario}.json").read_text())
    check_results_structure(data)
    assert data["scenario"] == scenario and data["smoke"] is True
    assert {f["name"] for f in data["figures"]} == EXPECTED_FIGURES[scenario]
    line = (tmp_path / "README.md").read_text().splitlines()[-1]
    assert f"`{scenario}` smoke" in line


def test_unknown_scenario_is_refused():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("bench", "nope", "--smoke")
