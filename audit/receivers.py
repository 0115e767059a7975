"""The audit trail listens to the job system: operator actions on jobs and queues are recorded."""


def record_operator_action(sender, *, request, action, resource_type="", resource_id="", details=None,
                           success=True, error_message="", **kwargs):
    from audit.services import audit_event_record

    audit_event_record(action=action, resource_type=resource_type, resource_id=resource_id, details=details,
                       success=success, error_message=error_message, request=request)


def connect_receivers():
    from queues.signals import operator_action

    operator_action.connect(record_operator_action, dispatch_uid="audit.record_operator_action")
