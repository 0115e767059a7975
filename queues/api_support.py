"""Old name of queues.api.submit (the submission rails other apps' endpoints use); kept because the README
documented `queues.api_support.accept_job` and `queues.api_support.submit_responses`."""

from queues.api.submit import (
    JobAcceptedSerializer,
    QueueFull,
    QueuesUnavailable,
    accept_job,
    submit_responses,
)

__all__ = ["JobAcceptedSerializer", "QueueFull", "QueuesUnavailable", "accept_job", "submit_responses"]
