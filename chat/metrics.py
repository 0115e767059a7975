"""Chat's Prometheus metrics (names: slimy_<subsystem>_<name>_<unit>)."""

from prometheus_client import Counter, Gauge

# Installs the work-horse-aware multi-process values, which must precede any metric's construction.
import queues.metrics  # noqa: F401

CHAT_FALLBACKS = Counter("slimy_chat_fallbacks_total", "Chat replies answered with the fallback.", ("reason",))
LLM_TOKENS = Counter("slimy_llm_tokens_total", "LLM tokens used.", ("kind",))  # kind: prompt | completion
LLM_BREAKER_OPEN = Gauge(
    "slimy_llm_breaker_open", "1 while the LLM circuit breaker is open.", multiprocess_mode="mostrecent"
)
