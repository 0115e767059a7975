"""`make run`: migrate, ensure a staff account, start Redis (if needed), web, workers, reconciler."""

import os
import secrets
import signal
import subprocess
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from queues.metrics import prepare_multiprocess_dir
from slimy_site.runall import EmbeddedRedis, Supervisor, SupervisorError, build_children, redis_answers


class Command(BaseCommand):
    help = "Run the whole system (web and worker processes; the reconciler runs inside the workers)."
    # The checks run in a child process below: importing every URLconf and view here would stay in this
    # long-lived supervisor's memory.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-web", action="store_true", help="Only workers and reconciler.")

    def handle(self, *args, **options):
        if not 0 < options["port"] < 65536:
            raise CommandError("--port must be between 1 and 65535.")
        env = dict(os.environ)
        embedded = None
        try:
            env["REDIS_URL"], embedded = self._redis(env)
        except SupervisorError as exc:
            raise CommandError(str(exc)) from exc

        # This process talks to the same Redis as its children (it recovers a dead worker's jobs).
        settings.REDIS_URL = env["REDIS_URL"]
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.DATA_DIR / "prometheus"))
        prepare_multiprocess_dir(env["PROMETHEUS_MULTIPROC_DIR"])
        env["DATA_DIR"] = str(settings.DATA_DIR)

        # In child processes: a first migrate loads every migration's state, memory this long-lived
        # supervisor would otherwise keep for its whole life (issue 13's footprint budget).
        for argv in (
            ["check"],
            ["migrate", "--no-input", "--verbosity", "0"],
            ["collectstatic", "--no-input", "--verbosity", "0"],
        ):
            if subprocess.run([sys.executable, "manage.py", *argv], env=env).returncode != 0:
                raise CommandError(f"`manage.py {argv[0]}` failed; see its output above.")
        self._ensure_staff()

        if settings.WORKER_PROCESSES < 1:
            raise CommandError("WORKER_PROCESSES must be at least 1.")
        # Each worker process serves every queue at CHAT/DATABASE/AUDIT_CONCURRENCY (slots, not processes).
        children = build_children(
            host=options["host"],
            port=options["port"],
            processes=settings.WORKER_PROCESSES,
            reconciler_process=not settings.WORKER_RECONCILER,
        )
        if options["no_web"]:
            children = [c for c in children if c.name != "web"]
        supervisor = Supervisor(
            children, env, log=lambda m: self.stdout.write(f"[runall] {m}"), on_exit=self._worker_exited
        )
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        self.stdout.write(f"[runall] Slimy on http://{options['host']}:{options['port']}/ (Redis {env['REDIS_URL']})")
        try:
            supervisor.run()
        finally:
            if embedded:
                embedded.stop()
                self.stdout.write("[runall] embedded Redis stopped")

    def _worker_exited(self, child, pid):
        """A worker process died (kill -9, OOM): its jobs run again now, not when its liveness key lapses."""
        if not child.name.startswith("worker-"):
            return
        import socket

        from django.db import connections

        # Imported here, on a crash only: the supervisor stays small while everything runs.
        from queues.reconcile import reconcile_exited_process

        try:
            report = reconcile_exited_process(host=socket.gethostname(), pid=pid)
        finally:
            connections.close_all()  # the supervisor holds no database session between crashes
        if report.recovered:
            self.stdout.write(f"[runall] {child.name}'s {len(report.recovered)} job(s) pushed again")

    def _redis(self, env):
        if env.get("REDIS_URL"):
            url = env["REDIS_URL"]
            if not redis_answers(url, 2.0):
                raise SupervisorError(f"REDIS_URL {url} does not answer.")
            self._warn_eviction(url)
            return url, None
        local = settings.LOCAL_REDIS_URL
        if redis_answers(local):
            self._warn_eviction(local)
            return local, None
        embedded = EmbeddedRedis(settings.DATA_DIR)
        embedded.start()
        self.stdout.write(
            f"[runall] started embedded Redis on port {embedded.port} (data in {settings.DATA_DIR}/redis)"
        )
        return embedded.url, embedded

    def _warn_eviction(self, url):
        import redis

        try:
            policy = redis.Redis.from_url(url).config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.RedisError:
            return  # CONFIG may be disabled on managed servers
        if policy != "noeviction":
            self.stderr.write(
                f"[runall] WARNING: Redis maxmemory-policy is {policy!r}; under memory pressure it may evict "
                "queued jobs. Use 'noeviction' (the reconciler restores lost jobs, but later)."
            )

    def _ensure_staff(self):
        users = get_user_model()
        if users.objects.filter(is_staff=True, is_active=True).exists():
            return
        username = "admin"
        if users.objects.filter(username=username).exists():
            raise CommandError(f"User {username!r} exists but is not active staff; fix it with `manage.py user_add`.")
        password = secrets.token_urlsafe(16)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.WARNING(
                f"[runall] created staff account '{username}' with password: {password}\n"
                "[runall] (shown once; it is stored only as a hash)"
            )
        )
