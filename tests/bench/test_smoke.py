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
    "throughput": {
        ("rqworker database (default command)", "Dramatiq 1x2 threads"),
        ("rqworker database (default command)", "Huey 2 threads"),
        ("rqworker database (default command)", "plain RQ SimpleWorker"),
        ("SlimyBatchWorker database", "Dramatiq 1x2 threads"),
        ("Dramatiq 1x2 threads", "plain RQ SimpleWorker"),
        ("Huey 2 threads", "plain RQ SimpleWorker"),
    },
    "audit-ingest": {
        "audit_event_record -> rows",
        "bulk jobs (1,000 events) -> rows",
        "audit_event_record -> rows vs COPY",
        "bulk jobs (1,000 events) -> rows vs COPY",
    },
    "pickup": {
        "rqworker database (default command) p50",
        "rqworker database (default command) p99",
        "rqworker database (default command) p50 after 0.3 s idle",
        "rqworker database (default command) p99 after 0.3 s idle",
    },
    "submit": {
        "POST submissions",
        "POST p50",
        "POST p99",
        "make-run server POST submissions",
        "make-run server POST p50",
        "make-run server POST p99",
        "make-run server POST submissions, vs gthread",
        "make-run server GET /health/live",
    },
    "watchers": {
        "token -> client event p50",
        "token -> client event p99",
        "/health/live p99 during streams",
        "Redis connections of the web process",
        "memory per open stream",
        "web CPU per delivered chunk",
    },
    "stream": {"first token -> first SSE event p50", "first token -> first SSE event p99"},
    "budget": {"answered requests/s", "answered requests/s as share of the limit", "429s sent by the provider (+1)"},
    "fairness": {
        "small guilds p95 completion",
        "small guilds p95 completion in reply-times",
        "guild A last completion",
    },
    "chat-concurrency": {
        f"{figure} at {level}"
        for level in (2, 6)
        for figure in (
            "jobs/s",
            "wall time",
            "peak PostgreSQL sessions",
            "PostgreSQL sessions opened",
            "peak PSS",
            "CPU per reply",
        )
    },
    "footprint": {"make run processes (Redis excluded)", "make run PSS at idle"},
}
# Scenarios that start many processes or wait on streamed replies: more than the default test timeout.
SLOW = {"chat-concurrency", "footprint", "throughput"}


def test_every_scenario_has_a_smoke_expectation():
    assert set(SCENARIOS) == set(EXPECTED_FIGURES)


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(name, marks=[pytest.mark.timeout(900)] if name in SLOW else []) for name in sorted(EXPECTED_FIGURES)],
)
def test_scenario_smoke_run_writes_results(scenario, tmp_path, redis_server):
    call_command(
        "bench", scenario, "--smoke", "--use-current-database", "--redis-url", redis_server.url, "--out", str(tmp_path)
    )
    data = json.loads((tmp_path / f"{scenario}.json").read_text())
    check_results_structure(data)
    assert data["scenario"] == scenario and data["smoke"] is True
    expected = EXPECTED_FIGURES[scenario]
    if isinstance(next(iter(expected)), tuple):
        assert {(f["name"], f["baseline"]["name"]) for f in data["figures"]} == expected
    else:
        assert {f["name"] for f in data["figures"]} == expected
    line = (tmp_path / "README.md").read_text().splitlines()[-1]
    assert f"`{scenario}` smoke" in line
    if scenario == "chat-concurrency":
        # Every reply completed with its full text returned and saved, in both workers, within the bound.
        for level, rounds in data["details"].items():
            for round_ in rounds.values():
                assert round_["finished"] is True, round_
                assert (round_["correct"], round_["problem_count"]) == (int(level), 0), round_
                assert 1 <= round_["peak_sessions"] <= round_["sessions_opened"], round_
    if scenario == "footprint":
        # The supervisor, web (master + WEB_PROCESSES workers) and one worker runtime: at most 6 (issue 13).
        assert 4 <= data["details"]["make run"]["processes"] <= 6, data["details"]
        assert data["details"]["web"]["processes"] == 2, data["details"]


def test_unknown_scenario_is_refused():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("bench", "nope", "--smoke")


@pytest.mark.parametrize("args", [["--levels", "50,x"], ["--levels", "0,5"], ["--jobs", "0"], ["--timeout", "-1"]])
def test_bad_sizes_are_refused(args):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("bench", "chat-concurrency", "--smoke", *args)
