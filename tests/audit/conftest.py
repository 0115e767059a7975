import pytest
from django.contrib.auth.models import Group


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(username="sam-staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def service_user(django_user_model):
    user = django_user_model.objects.create_user(username="svc-billing", password="pw-svc-123")
    user.groups.add(Group.objects.get_or_create(name="service")[0])
    return user


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root-admin", password="pw-root-123")
