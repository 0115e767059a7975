"""Liveness and readiness probes: 200, or 503 naming the failing part."""

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse

from queues.connections import redis_ping


def live(request):
    return JsonResponse({"ok": True, "status": "live"})


def ready(request):
    checks = {"database": "ok", "redis": "ok", "migrations": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            checks["migrations"] = "pending"
    except DatabaseError:
        checks["database"] = "unavailable"
        checks["migrations"] = "unknown"
    if not redis_ping(timeout=1.0):
        checks["redis"] = "unavailable"
    failing = [name for name, state in checks.items() if state != "ok"]
    body = {"ok": not failing, "checks": checks}
    if failing:
        body["error"] = "not_ready"
        body["message"] = "Not ready: " + ", ".join(failing)
    return JsonResponse(body, status=503 if failing else 200)
