"""Rate settings: parsing and per-role overrides."""

import pytest

from queues.api.throttling import Rate, parse_rate
from tests.factories.api import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]


@pytest.mark.parametrize(
    "text, rate",
    [
        ("30/min", Rate(30, 60)),
        ("5/10s", Rate(5, 10)),
        ("1000/hour", Rate(1000, 3600)),
        ("2/day", Rate(2, 86400)),
        ("none", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["30", "0/min", "x/min", "10/fortnight", "-1/s"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_role_overrides_give_service_clients_their_own_rate(settings, make_api_client):
    settings.API_RATE_LIMITS = {"read": "1/min", "read@service": "3/min"}
    member = make_api_client(UserFactory(role="member"))
    service = make_api_client(UserFactory(role="service"))
    assert [member.get("/api/me").status_code for _ in range(2)] == [200, 429]
    assert [service.get("/api/me").status_code for _ in range(4)] == [200, 200, 200, 429]


@pytest.mark.parametrize(
    "limits, fragment",
    [
        ({"submit": "lots"}, "Invalid rate"),
        ({"read@wizard": "1/min"}, "unknown role"),
    ],
)
def test_bad_rate_settings_are_system_check_errors(settings, limits, fragment):
    from slimy_site.checks import check_api_settings

    settings.API_RATE_LIMITS = limits
    assert any(fragment in e.msg for e in check_api_settings())
