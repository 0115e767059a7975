"""Job types of the job infrastructure itself."""

from queues.constants import QueueName
from queues.definitions import JobDefinition, RetryPolicy
from queues.reconcile import queues_reconcile


class ReconcileJob(JobDefinition):
    """Runs the reconciler from a queue (e.g. scheduled by an operator)."""

    name = "queues_reconcile"
    queue = QueueName.DATABASE
    internal = True
    timeout = 120
    retry = RetryPolicy(max_attempts=1)

    def run(self, payload, context):
        report = queues_reconcile()
        return {"requeued": len(report.requeued), "recovered": len(report.recovered)}
