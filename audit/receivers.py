"""The audit trail listens to the job system and the site: operator actions on jobs, queues and accounts,
and admin login lock-outs, are recorded."""


def record_operator_action(
    sender, *, request, action, resource_type="", resource_id="", details=None, success=True, error_message="", **kwargs
):
    from audit.services import audit_event_record

    audit_event_record(
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
        success=success,
        error_message=error_message,
        request=request,
    )


def record_login_locked_out(sender, *, request, username=None, ip_address=None, **kwargs):
    from audit.services import audit_event_record

    audit_event_record(
        action="auth.login_locked_out",
        resource_type="user",
        resource_id=username or "",
        details={"username": username or "", "ipAddress": ip_address or ""},
        success=False,
        error_message="Too many failed logins.",
        request=request,
    )


def connect_receivers():
    from axes.signals import user_locked_out

    from queues.signals import operator_action
    from slimy_site.signals import account_action

    operator_action.connect(record_operator_action, dispatch_uid="audit.record_operator_action")
    account_action.connect(record_operator_action, dispatch_uid="audit.record_account_action")
    user_locked_out.connect(record_login_locked_out, dispatch_uid="audit.record_login_locked_out")
