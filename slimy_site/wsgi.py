import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")
import django

django.setup(set_prefix=False)
# Before the handler loads its middleware: Django's instrumentation adds one (a no-op unless configured).
from slimy_site.tracing import tracing_setup  # noqa: E402

tracing_setup(role="web")
application = get_wsgi_application()
