"""Audit reports: aggregates over a time range (the audit_report job's result) and their CSV form."""

from __future__ import annotations

import csv
import datetime as dt
import io

from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from audit.selectors import audit_log_filter

TOP = 10
MAX_ACTORS = 1000


def _counts(qs, *fields):
    return list(
        qs.values(*fields)
        .annotate(count=Count("id"), failed=Count("id", filter=Q(success=False)))
        .order_by("-count", *fields)
    )


def audit_report_build(*, occurred_from: dt.datetime, occurred_to: dt.datetime) -> dict:
    """Totals, success rate, counts by action / resource type / actor (and the top 10 of each), events per day.

    The range is [from, to). Actors are keyed by the kept user id (null: no actor, e.g. the system).
    """
    qs = audit_log_filter(occurred_from=occurred_from, occurred_to=occurred_to).order_by()
    totals = qs.aggregate(total=Count("id"), failed=Count("id", filter=Q(success=False)))
    total, failed = totals["total"], totals["failed"]
    by_action = [{"action": r["action"], "count": r["count"], "failed": r["failed"]} for r in _counts(qs, "action")]
    by_type = [
        {"resourceType": r["resource_type"], "count": r["count"], "failed": r["failed"]}
        for r in _counts(qs, "resource_type")
    ]
    actors: dict = {}
    for r in _counts(qs, "actor_ref", "actor_label"):
        entry = actors.setdefault(
            r["actor_ref"], {"actorId": r["actor_ref"], "actorLabel": r["actor_label"], "count": 0, "failed": 0}
        )
        entry["count"] += r["count"]
        entry["failed"] += r["failed"]
    by_actor = sorted(actors.values(), key=lambda e: (-e["count"], e["actorId"] is None, e["actorId"] or 0))
    per_day = [
        {"date": r["day"].isoformat(), "count": r["count"], "failed": r["failed"]}
        for r in qs.annotate(day=TruncDate("occurred_at"))
        .values("day")
        .annotate(count=Count("id"), failed=Count("id", filter=Q(success=False)))
        .order_by("day")
    ]
    return {
        "from": occurred_from.isoformat(),
        "to": occurred_to.isoformat(),
        "total": total,
        "succeeded": total - failed,
        "failed": failed,
        "successRate": round((total - failed) / total, 4) if total else None,
        "byAction": by_action,
        "byResourceType": by_type,
        "byActor": by_actor[:MAX_ACTORS],
        "actorsTruncated": len(by_actor) > MAX_ACTORS,
        "top": {"actions": by_action[:TOP], "resourceTypes": by_type[:TOP], "actors": by_actor[:TOP]},
        "perDay": per_day,
    }


def audit_report_csv(report: dict) -> str:
    """One table: section, key, label, count, failed (summary rows first)."""
    out = io.StringIO()
    writer = _SafeWriter(csv.writer(out))
    writer.writerow(["section", "key", "label", "count", "failed"])
    writer.writerow(["summary", "from", "", report["from"], ""])
    writer.writerow(["summary", "to", "", report["to"], ""])
    writer.writerow(["summary", "total", "", report["total"], report["failed"]])
    rate = report["successRate"]
    writer.writerow(["summary", "success_rate", "", "" if rate is None else rate, ""])
    for row in report["byAction"]:
        writer.writerow(["action", row["action"], "", row["count"], row["failed"]])
    for row in report["byResourceType"]:
        writer.writerow(["resource_type", row["resourceType"], "", row["count"], row["failed"]])
    for row in report["byActor"]:
        key = "" if row["actorId"] is None else row["actorId"]
        writer.writerow(["actor", key, row["actorLabel"], row["count"], row["failed"]])
    for name, section in (("actions", "top_action"), ("resourceTypes", "top_resource_type"), ("actors", "top_actor")):
        for row in report["top"][name]:
            key = row.get("action", row.get("resourceType", row.get("actorId")))
            writer.writerow(
                [section, "" if key is None else key, row.get("actorLabel", ""), row["count"], row["failed"]]
            )
    for row in report["perDay"]:
        writer.writerow(["day", row["date"], "", row["count"], row["failed"]])
    return out.getvalue()


def csv_safe(value):
    """Text cells starting with = + - @ are formulas to spreadsheets: prefix an apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _SafeWriter:
    def __init__(self, writer):
        self._writer = writer

    def writerow(self, row):
        self._writer.writerow([csv_safe(cell) for cell in row])
