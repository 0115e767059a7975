"""QuickNegotiation answers a client that accepts anything as DRF's negotiation does, without parsing."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from slimy_site.negotiation import QuickNegotiation

RENDERERS = [JSONRenderer(), BrowsableAPIRenderer()]


def _request(path="/api/x", **headers):
    return Request(APIRequestFactory().get(path, **headers))


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/api/x", {}),
        ("/api/x", {"HTTP_ACCEPT": "*/*"}),
        ("/api/x", {"HTTP_ACCEPT": "application/json"}),
        ("/api/x", {"HTTP_ACCEPT": "text/html"}),
        ("/api/x", {"HTTP_ACCEPT": "text/html;q=0.1, application/json"}),
        ("/api/x?format=json", {}),
        ("/api/x?format=api", {"HTTP_ACCEPT": "*/*"}),
    ],
)
def test_the_choice_is_drfs(path, headers):
    quick = QuickNegotiation().select_renderer(_request(path, **headers), RENDERERS)
    drf = DefaultContentNegotiation().select_renderer(_request(path, **headers), RENDERERS)
    assert (type(quick[0]), quick[1]) == (type(drf[0]), drf[1])


def test_an_unacceptable_accept_header_is_still_refused():
    from rest_framework.exceptions import NotAcceptable

    with pytest.raises(NotAcceptable):
        QuickNegotiation().select_renderer(_request(HTTP_ACCEPT="image/png"), [JSONRenderer()])


def test_the_api_uses_it():
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_CONTENT_NEGOTIATION_CLASS is QuickNegotiation
