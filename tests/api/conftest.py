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
    return UserFactory(username="stella", role="staff")


@pytest.fixture
def no_limits(settings):
    settings.API_RATE_LIMITS = {}
    return settings
