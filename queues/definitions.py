"""JobDefinition: one subclass per job type (name, queue, payload serializer, timeout, retry policy),
the registry of them, and the typed errors a job raises. What a running attempt knows about itself
(JobContext) is in queues.context, which calls services: this module is a leaf.

Subclasses register themselves when their module is imported; every app lists its job modules
in `AppConfig.job_modules`, imported by `registry.load()` (lazily, never at import time of this module).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from rest_framework import serializers

from queues.constants import QueueName

if TYPE_CHECKING:  # the context is built by the runner, a layer above; only its type is named here
    from queues.context import JobContext


class PermanentJobError(Exception):
    """Raised by a job when retrying cannot help (bad input, missing or foreign resource)."""

    def __init__(self, message: str, *, code: str = "permanent_error"):
        super().__init__(message)
        self.code = code


class TransientJobError(Exception):
    """Raised by a job for a failure worth retrying; `retry_after` (s) overrides the backoff."""

    def __init__(self, message: str, *, code: str = "transient_error", retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class JobCancelled(Exception):
    """Raised inside a job when its record was cancelled while it ran."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base: float = 2.0  # seconds before the 2nd attempt; doubles each time (2, 4, 8, ...)
    backoff_max: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th attempt (1-based) failed."""
        return min(self.backoff_base * (2 ** (attempt - 1)), self.backoff_max)


class EmptyPayload(serializers.Serializer):
    pass


class JobDefinition:
    name: ClassVar[str] = ""
    queue: ClassVar[str] = QueueName.DATABASE
    payload_serializer: ClassVar[type[serializers.Serializer]] = EmptyPayload
    timeout: ClassVar[int] = 60  # seconds a single attempt may run
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    result_ttl: ClassVar[int | None] = None  # seconds RQ keeps its copy; None = settings.JOB_RESULT_TTL
    # Payload field naming the tenant the job is fair-shared for (e.g. a guild id); see tenant_of().
    tenant_field: ClassVar[str | None] = None
    # Plumbing nobody looks for (audit writes, reconciler passes): the admin's job list hides it by default.
    internal: ClassVar[bool] = False
    # How the worker runtime (queues.workers) runs a synchronous `run`: False = inline, in a batch with
    # other short jobs of its queue (one statement to start them, one to complete them); True = on the
    # queue's bounded thread pool, for jobs that block (sleep, wait on I/O) and would hold the batch up.
    # An `async def run` always runs as a coroutine on the runtime's event loop.
    blocking: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            registry.register(cls)

    @classmethod
    def validate(cls, payload: Any) -> dict:
        """Validated plain data, or a DRF ValidationError naming the fields."""
        if not isinstance(payload, dict):
            raise serializers.ValidationError({"payload": ["Must be a JSON object."]})
        if not payload and cls.payload_serializer is EmptyPayload:
            return {}  # nothing to check (and a serializer costs more than a short job itself)
        serializer = _payload_validator(cls.payload_serializer)
        # As is_valid() would, without a new serializer (and a deep copy of its fields) per payload.
        data = serializer.run_validation(payload)
        unknown = sorted(set(payload) - set(serializer.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return _plain(data)

    @classmethod
    def validate_stored(cls, payload: Any) -> dict:
        """The payload of a record about to run (what `validate` returned when it was enqueued): validated
        again by default, so a malformed record fails at once. A type whose validation costs as much as its
        work (audit events) may check only the shape here and validate fully what does not match it."""
        return cls.validate(payload)

    @classmethod
    def tenant_of(cls, payload: dict, owner_id: int | None) -> str:
        """The tenant a job belongs to: `payload[tenant_field]` when set and non-empty, else
        `user:<owner id>`, else "" (no owner). Override for another rule; keep it pure (no I/O)."""
        if cls.tenant_field:
            value = payload.get(cls.tenant_field)
            if value not in (None, ""):
                return str(value)[:100]
        return f"user:{owner_id}" if owner_id is not None else ""

    @classmethod
    def is_permanent(cls, exc: BaseException) -> bool:
        """Whether a failure should skip the remaining attempts. Override to classify more errors."""
        return isinstance(exc, PermanentJobError)

    def run(self, payload: dict, context: JobContext) -> Any:  # pragma: no cover - abstract
        """The job's work: a plain method, or `async def run` for I/O-bound jobs (see `is_async`)."""
        raise NotImplementedError

    @classmethod
    def is_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.run)


@functools.cache
def _payload_validator(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """One bound serializer per payload class, shared by every validation: run_validation keeps no state
    on the instance (nested serializers are used the same way), and binding the fields costs more than
    checking a short payload."""
    return serializer_class()


def _plain(data):
    """Validated data as JSON-able plain types (UUIDs and datetimes to strings)."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


class Registry:
    def __init__(self):
        self._definitions: dict[str, type[JobDefinition]] = {}
        self.duplicates: list[tuple[str, type, type]] = []
        self._loaded = False

    def register(self, definition: type[JobDefinition]) -> None:
        existing = self._definitions.get(definition.name)
        if existing is not None and _path(existing) != _path(definition):
            self.duplicates.append((definition.name, existing, definition))
            return
        self._definitions[definition.name] = definition

    def load(self) -> None:
        if self._loaded:
            return
        modules = [m for config in apps.get_app_configs() for m in getattr(config, "job_modules", ())]
        for module in modules + list(settings.EXTRA_JOB_MODULES):
            importlib.import_module(module)
        self._loaded = True

    def get(self, name: str) -> type[JobDefinition] | None:
        self.load()
        return self._definitions.get(name)

    def all(self) -> dict[str, type[JobDefinition]]:
        self.load()
        return dict(self._definitions)

    def internal_names(self) -> list[str]:
        """Names of the job types marked `internal = True`, sorted."""
        self.load()
        return sorted(name for name, definition in self._definitions.items() if definition.internal)


def _path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = Registry()
