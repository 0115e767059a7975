"""One module per scenario; each defines NAME, DEFAULTS, SMOKE and run(env, **options) -> Result."""

import importlib

SCENARIOS = {
    "throughput": "bench.scenarios.throughput",
    "audit-ingest": "bench.scenarios.audit_ingest",
    "chat-concurrency": "bench.scenarios.chat_concurrency",
    "pickup": "bench.scenarios.pickup",
    "stream": "bench.scenarios.stream",
    "submit": "bench.scenarios.submit",
    "fairness": "bench.scenarios.fairness",
    "budget": "bench.scenarios.budget",
    "footprint": "bench.scenarios.footprint",
    "watchers": "bench.scenarios.watchers",
}


def load(name: str):
    return importlib.import_module(SCENARIOS[name])
