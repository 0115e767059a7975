"""Slimy settings: the only module that reads the environment (django-environ)."""

import datetime as dt
import secrets
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / ".data"))).resolve()

DEBUG = env.bool("DJANGO_DEBUG", default=env.bool("DEBUG", default=False))


def _secret_key() -> str:
    # A laptop run needs no configuration: keep a generated key under DATA_DIR, never in the repo.
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.is_file():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS. Served behind TLS, DJANGO_HTTPS=1 turns on everything below together; each stays settable
# on its own. Off by default so `make run` keeps working over plain http://127.0.0.1:8000.
HTTPS = env.bool("DJANGO_HTTPS", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
# Load balancers probe health over plain HTTP; a redirect would read as "down".
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[r"^health/"])
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)
# "<META header>=<value>" naming the header a TLS-terminating proxy sets (and strips from clients);
# "none" trusts no header (TLS served by Django's own server).
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO=https" if HTTPS else "none")
SECURE_PROXY_SSL_HEADER = None if _proxy_ssl_header.lower() in ("", "none") else tuple(_proxy_ssl_header.split("=", 1))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "axes",  # before slimy_site, whose admin replaces axes' lock-out admin
    "slimy_site",
    "queues",
    "chat",
    "audit",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "queues.middleware.RequestIdMiddleware",
    "queues.logs.AccessLogMiddleware",
    "slimy_site.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "slimy_site.middleware.SiteMessageMiddleware",  # Django's MessageMiddleware, skipped under /api/
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into its 429 page
]

ROOT_URLCONF = "slimy_site.urls"
WSGI_APPLICATION = "slimy_site.wsgi.application"
ASGI_APPLICATION = "slimy_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL with DATABASE_URL, else SQLite (WAL) under DATA_DIR for a laptop run.
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's, with its session check made only after the session sat unused (slimy_site/postgresql).
        DATABASES["default"]["ENGINE"] = "slimy_site.postgresql"
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DB_CONNECT_TIMEOUT", default=5)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "slimy.sqlite3",
            "OPTIONS": {
                # WAL lets the web process read while a worker writes; IMMEDIATE avoids
                # "database is locked" upgrades from read to write transactions.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and the queues.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Where `make run` looks for a Redis when REDIS_URL is unset (else it starts its own).
LOCAL_REDIS_URL = env.str("LOCAL_REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=5.0)

CHAT_CONCURRENCY = env.int("CHAT_CONCURRENCY", default=5)
DATABASE_CONCURRENCY = env.int("DATABASE_CONCURRENCY", default=10)
AUDIT_CONCURRENCY = env.int("AUDIT_CONCURRENCY", default=2)

# The RQ queue map is derived from QueueName and Priority (queues.constants) so
# the two can never disagree; see queues.constants.rq_queue_names().
from queues.constants import rq_queue_names  # noqa: E402

RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600, "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT}
    for name in rq_queue_names()
}
# `manage.py rqworker chat database audit` runs the worker runtime: every queue in one process at its
# own concurrency (queues.workers.runtime). `queues.worker.SlimyWorker` is the forking worker.
RQ = {"WORKER_CLASS": env.str("RQ_WORKER_CLASS", default="queues.workers.runtime.SlimyRuntimeWorker")}
# django-rq's own admin registration would serve its views again under /admin/django_rq/ behind
# is_staff alone; its pages are served, gated, at /admin/rq/ (queues.admin.rq_urls).
RQ_SHOW_ADMIN_LINK = False

# Seconds without a heartbeat after which a worker counts as dead and its started jobs are
# handed back to their retry policy by the reconciler.
WORKER_TTL = env.int("WORKER_TTL", default=3)
RECONCILE_INTERVAL = env.int("RECONCILE_INTERVAL", default=1)
# --- Worker runtime (queues.workers): heartbeat, in-process reconciler, shutdown, pools.
# Seconds between heartbeats (each refreshes the liveness key, TTL WORKER_TTL, and the dashboard's slots).
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=0.5)
# A lapsed liveness key is confirmed this much later before the worker's jobs are taken (a flushed Redis):
# two heartbeat intervals, so a live worker has beaten again by then.
RECONCILE_CONFIRM_SECONDS = env.float("RECONCILE_CONFIRM_SECONDS", default=1.0)
# Whether each runtime process also runs the reconciler (one process per pass, through a Redis lock).
WORKER_RECONCILER = env.bool("WORKER_RECONCILER", default=True)
# SIGTERM: seconds jobs in flight may take to finish before they are handed back (a 2nd SIGTERM: at once).
WORKER_SHUTDOWN_GRACE = env.float("WORKER_SHUTDOWN_GRACE", default=25.0)
# Database sessions for the async jobs of one process, however many are in flight.
WORKER_DB_THREADS = env.int("WORKER_DB_THREADS", default=4)
# `make run`: how many runtime processes (each serving every queue at the concurrencies above).
WORKER_PROCESSES = env.int("WORKER_PROCESSES", default=1)
# A queued record is only considered lost once it is this old (gives on-commit pushes time to land).
RECONCILE_GRACE_SECONDS = env.int("RECONCILE_GRACE_SECONDS", default=30)
JOB_RESULT_TTL = env.int("JOB_RESULT_TTL", default=3600)
JOB_RECORD_RETENTION_DAYS = env.int("JOB_RECORD_RETENTION_DAYS", default=30)
# Idempotent callables the reconciler loop (`queues_reconcile --loop`) runs every PERIODIC_HOOKS_INTERVAL
# seconds: expire old job records, keep the daily audit clean-up scheduled, verify the audit chain,
# drain audit events whose on-demand drain request was lost.
PERIODIC_HOOKS = env.list(
    "PERIODIC_HOOKS",
    default=[
        "queues.services.job_records_expire",
        "audit.retention.audit_cleanup_schedule_next",
        "audit.selectors.audit_chain_state",
        "audit.services.audit_drain_ensure",
    ],
)
PERIODIC_HOOKS_INTERVAL = env.int("PERIODIC_HOOKS_INTERVAL", default=300)
# How long due hooks may wait for a pass in which the worker started no job (queues.workers.liveness).
PERIODIC_HOOKS_DEFER_SECONDS = env.float("PERIODIC_HOOKS_DEFER_SECONDS", default=60)
# Extra modules defining job types (tests use it for their own job types).
EXTRA_JOB_MODULES = env.list("EXTRA_JOB_MODULES", default=[])
QUEUE_MAX_BACKLOG = env.int("QUEUE_MAX_BACKLOG", default=10_000)
# Seconds a web process reuses a user's group roles (slimy_site.roles); 0 reads them on every request.
ROLE_CACHE_SECONDS = env.int("ROLE_CACHE_SECONDS", default=5)
# Seconds a web process reuses an API token's look-up (slimy_site.authentication: revocation elsewhere
# applies within it, expiry always at once); 0 looks the token up on every request.
TOKEN_CACHE_SECONDS = env.int("TOKEN_CACHE_SECONDS", default=5)
# Slots per queue of `queues.threadworker.SlimyThreadWorker` (the runtime with every synchronous job on
# the thread pool; kept for scripts and benchmarks that name it).
WORKER_THREADS = env.int("WORKER_THREADS", default=16)

# --- Metrics: multi-process directory (set by `make run` for every process; read by prometheus_client
# itself at import) and the bearer token that lets Prometheus scrape /metrics (empty: staff only).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Auth, API.
# Admin password guessing (django-axes): AXES_FAILURE_LIMIT failed logins lock out for AXES_COOLOFF_MINUTES
# (0: until staff clear it in the admin, which is audited); a success resets the count. What is locked:
# the pair username+ip_address by default (a guesser elsewhere cannot lock the real admin out; behind a
# proxy every client has the proxy's address, so it acts per username). Comma-separated, any one locks:
# e.g. "username,ip_address".
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
_axes_cooloff_minutes = env.int("AXES_COOLOFF_MINUTES", default=15)
AXES_COOLOFF_TIME = dt.timedelta(minutes=_axes_cooloff_minutes) if _axes_cooloff_minutes > 0 else None
AXES_LOCKOUT_PARAMETERS = [
    p.split("+") if "+" in p else p for p in env.list("AXES_LOCKOUT_PARAMETERS", default=["username+ip_address"])
]
AXES_RESET_ON_SUCCESS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# API tokens (slimy_site.tokens) expire this many days after they are issued; 0: never.
API_TOKEN_TTL_DAYS = env.int("API_TOKEN_TTL_DAYS", default=0)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
# Endpoints that take batches get more room: 1,000 audit events do not fit in 64 KiB.
API_MAX_BODY_BYTES_BY_PATH = {"/api/audit-log": env.int("AUDIT_API_MAX_BODY_BYTES", default=2 * 1024 * 1024)}
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, *API_MAX_BODY_BYTES_BY_PATH.values(), 2_621_440)
# Per user and endpoint class (queues.api.throttling): "<scope>=<n>/<period>", "<scope>@<role>=..." per role.
API_RATE_LIMITS = env.dict(
    "API_RATE_LIMITS",
    default={
        "submit": "120/min",
        "read": "1200/min",
        "write": "300/min",
        "submit@service": "6000/min",
        "write@service": "6000/min",
    },
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "slimy_site.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Any role (slimy_site.roles): an account without one is suspended; views narrow it further.
    "DEFAULT_PERMISSION_CLASSES": ["slimy_site.roles.HasAnyRole"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["slimy_site.parsers.SafeJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "slimy_site.negotiation.QuickNegotiation",
    "DEFAULT_THROTTLE_CLASSES": ["queues.api.throttling.ScopedRedisThrottle"],
    "EXCEPTION_HANDLER": "slimy_site.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "slimy_site.schema.SlimyAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Slimy API",
    "DESCRIPTION": "Background jobs: chat replies, conversations and the audit trail.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the drf-spectacular-sidecar package: /api/docs/ works offline, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

LOGIN_URL = "/admin/login/"

# --- Logging: every line carries the request id (and job fields inside a job).
# auto = compact coloured lines in a terminal, JSON lines otherwise (a file, a pipe, a log collector).
LOG_FORMATS = ("auto", "console", "json", "text")
LOG_FORMAT = env.str("LOG_FORMAT", default="auto")
if LOG_FORMAT not in LOG_FORMATS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}; got {LOG_FORMAT!r}.")
_STDERR_IS_TERMINAL = sys.stderr.isatty()  # the console handler writes to stderr
if LOG_FORMAT == "auto":
    LOG_FORMAT = "console" if _STDERR_IS_TERMINAL else "json"
LOG_COLOUR = _STDERR_IS_TERMINAL and not env.str("NO_COLOR", default="")  # https://no-color.org
LOG_PROCESS = env.str("SLIMY_PROCESS", default="")  # the tag `make run` gives each child: web, worker-…
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
RQ_LOG_LEVEL = env.str("RQ_LOG_LEVEL", default="WARNING")  # RQ's own chatter (registries, pub/sub, locks)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "queues.logs.ContextFilter"},
        "rq_floor": {"()": "queues.logs.LoggerFloorFilter", "prefixes": ["rq"], "level": RQ_LOG_LEVEL},
    },
    "formatters": {
        "json": {"()": "queues.logs.JsonFormatter", "process_tag": LOG_PROCESS},
        "console": {"()": "queues.logs.ConsoleFormatter", "process_tag": LOG_PROCESS, "colour": LOG_COLOUR},
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s job=%(job_id)s] %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context", "rq_floor"],
            "formatter": LOG_FORMAT,
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "rq": {"level": RQ_LOG_LEVEL},
        "django.db.backends": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},  # its start-up banner, on every command
        "httpx": {"level": "WARNING"},  # the LLM client: a line per HTTP call (the runner logs each job)
    },
}

# --- Audit.
# Events older than this many days are deleted by the daily audit_cleanup job...
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)
# ...except these actions, kept for ever (comma-separated in the environment).
AUDIT_RETENTION_KEEP_ACTIONS = env.list("AUDIT_RETENTION_KEEP_ACTIONS", default=[])
# Hour of the day (UTC) at which the scheduled clean-up runs.
AUDIT_CLEANUP_HOUR = env.int("AUDIT_CLEANUP_HOUR", default=3)

# --- LLM.
# No key means no provider calls: every chat reply is the fallback (a laptop run needs no account).
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")  # any OpenAI-compatible server
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=30.0)  # s to connect, and between two streamed chunks
OPENAI_STREAM_MAX_SECONDS = env.float("OPENAI_STREAM_MAX_SECONDS", default=90.0)  # whole reply, < the job timeout
OPENAI_MAX_TOKENS = env.int("OPENAI_MAX_TOKENS", default=500)
# Circuit breaker (state in Redis, shared by every worker): open after this many consecutive
# provider failures, stay open for the cool-down, then let one probe call through.
LLM_BREAKER_FAILURES = env.int("LLM_BREAKER_FAILURES", default=5)
LLM_BREAKER_COOLDOWN = env.float("LLM_BREAKER_COOLDOWN", default=30.0)
# Estimated tokens of conversation history sent as context (newest messages first).
CHAT_CONTEXT_TOKEN_BUDGET = env.int("CHAT_CONTEXT_TOKEN_BUDGET", default=2000)
CHAT_CONTEXT_MAX_MESSAGES = env.int("CHAT_CONTEXT_MAX_MESSAGES", default=50)
# Server-Sent Events of a job's output: heartbeat comment interval and the longest a stream stays
# open before the client reconnects with Last-Event-ID.
JOB_EVENTS_HEARTBEAT = env.float("JOB_EVENTS_HEARTBEAT", default=15.0)
JOB_EVENTS_MAX_SECONDS = env.float("JOB_EVENTS_MAX_SECONDS", default=300.0)
# Open event streams: per user across every web process, and per web process (over either: 429).
API_MAX_STREAMS_PER_USER = env.int("API_MAX_STREAMS_PER_USER", default=20)
API_MAX_STREAMS_PER_PROCESS = env.int("API_MAX_STREAMS_PER_PROCESS", default=2000)
# The web server of `make run` (slimy_site.asgi): processes, and threads per process for the WSGI routes.
WEB_PROCESSES = env.int("WEB_PROCESSES", default=1)
WEB_THREADS = env.int("WEB_THREADS", default=8)
# Redis connections each shared client of a web process may open (its request threads take turns).
WEB_REDIS_CONNECTIONS = env.int("WEB_REDIS_CONNECTIONS", default=3)
# Attempts of one chat reply, and the backoff before the 2nd (doubling); the last failure answers the fallback.
CHAT_RETRY_ATTEMPTS = env.int("CHAT_RETRY_ATTEMPTS", default=3)
CHAT_RETRY_BACKOFF = env.float("CHAT_RETRY_BACKOFF", default=2.0)

# --- issue 17: fairness between tenants, provider budgets, quotas, tracing
# In-flight jobs per tenant (guild, else user) on a fair-shared queue; more of theirs wait their turn.
CHAT_TENANT_CONCURRENCY = env.int("CHAT_TENANT_CONCURRENCY", default=2)
# Queues whose jobs are dequeued fairly across tenants (queues.fairness), and shown per tenant in /metrics.
FAIR_QUEUES = env.list("FAIR_QUEUES", default=["chat"])
# Tenants named in the per-tenant gauges; the rest are summed as tenant="other" (bounded cardinality).
METRICS_TENANT_TOP_N = env.int("METRICS_TENANT_TOP_N", default=10)
# Provider budgets shared by every worker through Redis; 0 = no budget of that kind.
OPENAI_RPM = env.int("OPENAI_RPM", default=0)
OPENAI_TPM = env.int("OPENAI_TPM", default=0)
# Tokens a tenant may use per UTC day when no TenantQuota row says otherwise; 0 = unlimited.
CHAT_TENANT_DAILY_TOKENS = env.int("CHAT_TENANT_DAILY_TOKENS", default=0)
# OpenTelemetry: off unless an OTLP endpoint is set (the collector's base URL, HTTP/protobuf).
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="slimy")
