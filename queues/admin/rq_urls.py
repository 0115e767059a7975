"""django-rq's own pages under /admin/rq/, behind `queues.manage_queues`, read-only.

django-rq's views only ask for `is_staff`, and its destructive ones (empty a queue, delete, requeue,
enqueue or stop jobs, bulk actions) change Redis behind the ledger's back and leave no audit trail.
Here every page needs active staff with `queues.manage_queues`; the destructive URLs keep their names
(django-rq's templates link to them) but change nothing: they send the operator to Slimy's own admin,
whose actions go through the services and are audited. Its token-authenticated JSON and metrics views
are behind the same gate (Slimy's /metrics is the scrape endpoint).
"""

from __future__ import annotations

import uuid
from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django_rq.urls import get_admin_urlpatterns, get_api_urlpatterns

from queues.models import JobRecord

PERMISSION = "queues.manage_queues"

# django-rq URL names whose views write to Redis.
JOB_OPERATIONS = frozenset({"delete_job", "requeue_job", "enqueue_job", "stop_job"})
QUEUE_OPERATIONS = frozenset({"clear", "requeue_all", "delete_failed_jobs", "confirm_action", "actions"})

app_name = "django_rq"


def gate(view):
    """Active staff with `queues.manage_queues`; anyone else logs in (anonymous) or gets a 403."""

    @wraps(view)
    def gated(request, *args, **kwargs):
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not user.has_perm(PERMISSION):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return gated


@never_cache
def operation_moved(request, queue_index=None, job_id=None, **kwargs):
    """Stands in for a destructive django-rq view: nothing is changed, the operator is sent to the
    audited equivalent (the job's page for one job, the queue dashboard otherwise)."""
    messages.warning(
        request,
        "Operations on queues and jobs go through Slimy's admin, where they are "
        "checked and written to the audit trail; nothing was changed.",
    )
    target = reverse("admin:queues_jobrecord_dashboard")
    if job_id is not None and JobRecord.objects.filter(pk=_uuid_or_none(job_id)).exists():
        target = reverse("admin:queues_jobrecord_change", args=[job_id])
    return HttpResponseRedirect(target)


def _uuid_or_none(value: str):
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _patterns():
    patterns = []
    for pattern in get_api_urlpatterns() + get_admin_urlpatterns():
        if pattern.name in JOB_OPERATIONS | QUEUE_OPERATIONS:
            patterns.append(path(str(pattern.pattern), gate(operation_moved), name=pattern.name))
        else:
            pattern.callback = gate(pattern.callback)
            patterns.append(pattern)
    return patterns


urlpatterns = _patterns()
