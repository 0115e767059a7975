"""Content negotiation that refuses an empty `?format=`.

DRF ignores `format=` with no value, while the schema lists `format` with an enum; an empty value is
an unknown format like any other (`404 not_found`, as DRF answers `?format=xml`).
"""

from django.http import Http404
from rest_framework.negotiation import DefaultContentNegotiation


class StrictFormatNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        name = self.settings.URL_FORMAT_OVERRIDE
        if name and not format_suffix and request.query_params.get(name, None) == "":
            raise Http404("Unknown format.")
        return super().select_renderer(request, renderers, format_suffix)
