"""The queues app in the Django admin (imported by admin autodiscovery).

- jobs: the JobRecord admin (list, detail, filters) and its URLs;
- actions: retry / cancel / copy / delete-from-Redis, one code path for the list and the detail page;
- views: the detail page's context, the dashboard and its queue operations;
- dashboard: the figures the dashboard shows (ledger reads; Redis state from queues.selectors.queue_state);
- rq_urls: django-rq's own pages, gated and read-only, at /admin/rq/.
"""

from queues.admin.jobs import JobRecordAdmin

__all__ = ["JobRecordAdmin"]
