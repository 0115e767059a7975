import pytest

from tests.factories.api import UserFactory


@pytest.fixture
def member(db):
    return UserFactory(username="mia", role="member")


@pytest.fixture
def other_member(db):
    return UserFactory(username="otto", role="member")


@pytest.fixture
def staff(db):
    """Staff with the admin's job permissions (view, retry, cancel): staff powers over others' jobs."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="stella", role="staff")
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="queues", codename__in=["view_jobrecord", "retry_jobrecord", "cancel_jobrecord"]
        )
    )
    return user


@pytest.fixture
def bare_staff(db):
    """Staff without any permission."""
    return UserFactory(username="sam", role="staff")


@pytest.fixture
def no_limits(settings):
    settings.API_RATE_LIMITS = {}
    return settings
