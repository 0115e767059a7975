"""Content negotiation: DRF's, answered without parsing when the client accepts anything; and a variant
that refuses an empty `?format=`.

DRF ignores `format=` with no value, while the schema lists `format` with an enum where a view offers
it; there an empty value is an unknown format like any other (`404 not_found`, as DRF answers
`?format=xml`).
"""

from django.http import Http404
from rest_framework.negotiation import DefaultContentNegotiation


class QuickNegotiation(DefaultContentNegotiation):
    """The API's default. A request without `?format=` whose Accept is absent or `*/*` (most API clients,
    every submission) gets what DRF would choose, the first renderer, without parsing and ranking
    media types; any other request is negotiated by DRF."""

    def select_renderer(self, request, renderers, format_suffix=None):
        name = self.settings.URL_FORMAT_OVERRIDE
        if (
            not format_suffix
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and (not name or name not in request.query_params)
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


class StrictFormatNegotiation(QuickNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        name = self.settings.URL_FORMAT_OVERRIDE
        if name and not format_suffix and request.query_params.get(name, None) == "":
            raise Http404("Unknown format.")
        return super().select_renderer(request, renderers, format_suffix)
