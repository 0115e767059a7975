"""Audit's Prometheus metrics (names: slimy_<subsystem>_<name>_<unit>).

`slimy_audit_chain_ok` is set by the audit chain verification (1 = intact, 0 = broken):
`from audit.metrics import AUDIT_CHAIN_OK; AUDIT_CHAIN_OK.set(1 if ok else 0)`.
"""

from prometheus_client import Counter, Gauge

# Installs the work-horse-aware multi-process values, which must precede any metric's construction.
import queues.metrics  # noqa: F401

AUDIT_EVENTS_WRITTEN = Counter("slimy_audit_events_written_total", "Audit events committed to the log.")
AUDIT_EVENTS_FAILED = Counter(
    "slimy_audit_events_failed_total", "Audit events that could not be enqueued or written.", ("stage",)
)

AUDIT_CHAIN_OK = Gauge(
    "slimy_audit_chain_ok",
    "1 when the last audit chain verification passed, 0 when broken.",
    multiprocess_mode="mostrecent",
)
