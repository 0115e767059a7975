import pytest
from django.contrib.auth.models import Permission

PERMS = {
    "view": "view_jobrecord",
    "retry": "retry_jobrecord",
    "cancel": "cancel_jobrecord",
    "manage": "manage_queues",
    "delete": "delete_jobrecord",
}


@pytest.fixture
def make_staff(django_user_model):
    """A staff user holding exactly the named job permissions (keys of PERMS)."""
    made = []

    def make(*perms, username=None):
        user = django_user_model.objects.create_user(
            username=username or f"staff{len(made)}", password="pw-staff-123", is_staff=True
        )
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="queues", codename__in=[PERMS[p] for p in perms])
        )
        made.append(user)
        return django_user_model.objects.get(pk=user.pk)  # fresh permission cache

    return make


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root-123", email="r@x.test")


@pytest.fixture
def admin_client_for(client):
    """A browser-like test client logged in (session) as the given user."""

    def login(user):
        client.force_login(user)
        return client

    return login
