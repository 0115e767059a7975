"""Admin password guessing: repeated failed logins lock the account out; staff clear it, audited."""

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from audit.models import AuditLog

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user(username="operator", password="pw-operator-123", is_staff=True)


def _login(client, password, username="operator"):
    return client.post(LOGIN, {"username": username, "password": password})


def _guess(times, username="operator"):
    client = Client()
    for i in range(times):
        response = _login(client, f"wrong-{i}", username)
    return response


def test_failed_logins_lock_the_account_out_even_for_the_right_password(operator, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for i in range(4):
        assert _login(Client(), f"wrong-{i}").status_code == 200  # the form again, with an error
    assert _guess(1).status_code == 429  # the fifth failure locks
    locked = Client()
    response = _login(locked, "pw-operator-123")
    assert response.status_code == 429
    assert "_auth_user_id" not in locked.session
    assert locked.get("/admin/").status_code == 302  # still not logged in


def test_a_success_before_the_limit_resets_the_count(operator):
    _guess(4)
    assert _login(Client(), "pw-operator-123").status_code == 302
    _guess(4)
    assert _login(Client(), "pw-operator-123").status_code == 302


def test_the_lock_out_ends_after_the_cool_off(operator, settings):
    _guess(5)
    assert _login(Client(), "pw-operator-123").status_code == 429
    AccessAttempt.objects.update(
        attempt_time=dt.datetime.now(dt.UTC) - settings.AXES_COOLOFF_TIME - dt.timedelta(seconds=1)
    )
    assert _login(Client(), "pw-operator-123").status_code == 302


def test_staff_clear_a_lock_out_in_the_admin_and_it_is_audited(operator, django_user_model, run_worker):
    _guess(5)
    assert _login(Client(), "pw-operator-123").status_code == 429
    clearer = django_user_model.objects.create_user(username="keeper", password="pw-keeper-123", is_staff=True)
    clearer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="axes", codename__in=["view_accessattempt", "delete_accessattempt"]
        )
    )
    admin = Client()
    admin.force_login(clearer)
    attempt = AccessAttempt.objects.get(username="operator")
    changelist = reverse("admin:axes_accessattempt_changelist")
    assert "operator" in admin.get(changelist).content.decode()
    response = admin.post(changelist, {"action": "clear_lockouts", "_selected_action": [attempt.pk]})
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert _login(Client(), "pw-operator-123").status_code == 302
    run_worker(["audit"])
    event = AuditLog.objects.get(action="admin.login_lockout_clear")
    assert (event.actor_id, event.resource_type, event.resource_id) == (clearer.pk, "user", "operator")
    assert event.details["cleared"][0]["username"] == "operator"
    assert event.details["cleared"][0]["failures"] == 6  # five guesses and the refused right password
    locked_out = AuditLog.objects.filter(action="auth.login_locked_out")
    assert locked_out.exists()
    assert all(e.resource_id == "operator" and e.success is False for e in locked_out)


def test_deleting_lock_out_records_is_audited_too(operator, django_user_model, run_worker):
    _guess(5)
    root = django_user_model.objects.create_superuser(username="root", password="pw-root-123", email="r@x.test")
    admin = Client()
    admin.force_login(root)
    attempt = AccessAttempt.objects.get(username="operator")
    response = admin.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    run_worker(["audit"])
    assert AuditLog.objects.filter(action="admin.login_lockout_clear", actor_id=root.pk).count() == 1


def test_staff_without_the_delete_permission_cannot_clear(operator, django_user_model):
    _guess(5)
    viewer = django_user_model.objects.create_user(username="viewer", password="pw-viewer-123", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(content_type__app_label="axes", codename="view_accessattempt")
    )
    admin = Client()
    admin.force_login(viewer)
    attempt = AccessAttempt.objects.get(username="operator")
    admin.post(
        reverse("admin:axes_accessattempt_changelist"), {"action": "clear_lockouts", "_selected_action": [attempt.pk]}
    )
    assert admin.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}).status_code == 403
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()
    assert _login(Client(), "pw-operator-123").status_code == 429
