import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")
import django  # noqa: E402

django.setup(set_prefix=False)
# Before the handler loads its middleware: Django's instrumentation adds one (a no-op unless configured).
from slimy_site.tracing import tracing_setup  # noqa: E402

tracing_setup(role="web")
application = get_asgi_application()
