"""Every Prometheus metric of Slimy (names: slimy_<subsystem>_<name>_<unit>).

Job metrics are recorded by the runner's hooks (queues.signals); chat and audit increment theirs
directly. Queue depth and worker gauges are computed at scrape time by a collector.
"""

from prometheus_client import Counter, Gauge, Histogram

JOB_LABELS = ("queue", "job_type")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

JOBS_ENQUEUED = Counter("slimy_jobs_enqueued_total", "Jobs accepted into a queue.", JOB_LABELS)
JOBS_FINISHED = Counter(
    "slimy_jobs_finished_total", "Job attempts finished, by outcome (completed/failed/retried/cancelled).",
    JOB_LABELS + ("outcome",),
)
JOB_DURATION = Histogram("slimy_job_duration_seconds", "Run time of one attempt.", JOB_LABELS,
                         buckets=DURATION_BUCKETS)
JOB_WAIT = Histogram("slimy_job_wait_seconds", "Time from due to start of an attempt.", JOB_LABELS,
                     buckets=DURATION_BUCKETS)

CHAT_FALLBACKS = Counter("slimy_chat_fallbacks_total", "Chat replies answered with the fallback.", ("reason",))
LLM_TOKENS = Counter("slimy_llm_tokens_total", "LLM tokens used.", ("kind",))  # kind: prompt | completion
LLM_BREAKER_OPEN = Gauge("slimy_llm_breaker_open", "1 while the LLM circuit breaker is open.",
                         multiprocess_mode="mostrecent")

AUDIT_EVENTS_WRITTEN = Counter("slimy_audit_events_written_total", "Audit events committed to the log.")
AUDIT_EVENTS_FAILED = Counter(
    "slimy_audit_events_failed_total", "Audit events that could not be enqueued or written.", ("stage",)
)
