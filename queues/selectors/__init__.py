"""Reads (no writes): the job ledger (jobs), the admin's date drill-down (periods), and what Redis holds
about the queues (queue_state, the one reader of queue state).

`from queues.selectors import job_get_for_user` keeps working for the ledger reads; queue state is
imported from its module (it needs Redis, the ledger reads do not).
"""

from queues.selectors.jobs import (
    GENERIC_JOB_ERROR,
    JOB_PERMISSIONS,
    JobNotFound,
    job_attempt_is_current,
    job_attempts_superseded,
    job_error_for_viewer,
    job_get_for_user,
    job_is_cancelled,
    job_list_for_user,
    job_waiting_exists,
    queryset_count_estimate,
    user_may_act_on_any_job,
)
from queues.selectors.periods import queryset_dates_with_rows, queryset_periods_with_rows

__all__ = [
    "GENERIC_JOB_ERROR",
    "JOB_PERMISSIONS",
    "JobNotFound",
    "job_attempt_is_current",
    "job_attempts_superseded",
    "job_error_for_viewer",
    "job_get_for_user",
    "job_is_cancelled",
    "job_list_for_user",
    "job_waiting_exists",
    "queryset_count_estimate",
    "queryset_dates_with_rows",
    "queryset_periods_with_rows",
    "user_may_act_on_any_job",
]
