"""`python manage.py bench <scenario|all> [--smoke]`: run benchmarks (see bench/ and README)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from bench.harness import RESULTS_DIR, BenchEnv, BenchSetupError
from bench.scenarios import SCENARIOS, load


class Command(BaseCommand):
    help = "Run a benchmark scenario against PostgreSQL and a private Redis; writes bench/results/<scenario>.json."
    requires_system_checks = []  # the bench database is chosen in handle(), before anything touches it

    def add_arguments(self, parser):
        parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
        parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the scenario runs, in seconds")
        parser.add_argument("--jobs", type=int, help="jobs / events / requests per round (scenario default)")
        parser.add_argument("--processes", type=int, help="worker or web processes")
        parser.add_argument("--repeat", type=int, help="rounds; figures are medians")
        parser.add_argument("--levels", help="chat-concurrency: comma-separated levels, e.g. 50,200,1000")
        parser.add_argument("--timeout", type=float, help="seconds a round may take before it is stopped")
        parser.add_argument("--out", default=str(RESULTS_DIR), help="directory for <scenario>.json and README.md")
        parser.add_argument(
            "--database",
            default="slimy_bench",
            help="database to create (if missing), migrate and use (default slimy_bench)",
        )
        parser.add_argument(
            "--use-current-database",
            action="store_true",
            help="use DATABASE_URL's database as is (no create, no migrate)",
        )
        parser.add_argument("--redis-url", help="use this (private!) Redis instead of starting one; it is flushed")

    def handle(self, *args, **options):
        import bench.jobs  # noqa: F401  (registers the bench job types in this process)

        overrides = {k: options[k] for k in ("jobs", "processes", "repeat", "timeout") if options[k] is not None}
        if any(v <= 0 for v in overrides.values()):
            raise CommandError("--jobs, --processes, --repeat and --timeout must be positive.")
        if options["levels"] is not None:
            try:
                overrides["levels"] = tuple(int(v) for v in options["levels"].split(","))
            except ValueError:
                raise CommandError("--levels takes comma-separated whole numbers, e.g. 50,200,1000.") from None
            if not overrides["levels"] or min(overrides["levels"]) <= 0:
                raise CommandError("--levels must be positive.")

        db = settings.DATABASES["default"]
        if not db["ENGINE"].endswith("postgresql"):
            raise CommandError("Benchmarks run against PostgreSQL: set DATABASE_URL=postgres://...")
        database_url = (
            _current_url(db) if options["use_current_database"] else self._bench_database(options["database"])
        )

        server = None
        redis_url = options["redis_url"]
        if not redis_url:
            from tests.redis_server import RedisServer

            server = RedisServer().start()
            redis_url = server.url
        self._point_at_redis(redis_url)
        try:
            env = BenchEnv(
                database_url=database_url, redis_url=redis_url, out_dir=Path(options["out"]), smoke=options["smoke"]
            )
            names = list(SCENARIOS) if options["scenario"] == "all" else [options["scenario"]]
            for name in names:
                module = load(name)
                sizes = dict(module.SMOKE if options["smoke"] else module.DEFAULTS)
                sizes.update(overrides)
                self.stdout.write(f"running {name} {sizes} (logs in {env.log_dir})")
                try:
                    result = module.run(env, **sizes)
                except BenchSetupError as exc:
                    raise CommandError(str(exc)) from exc
                result.write(self.stdout)
        finally:
            if server is not None:
                server.stop()

    def _bench_database(self, name: str) -> str:
        import psycopg

        if not name.replace("_", "").isalnum():
            raise CommandError("--database must be a plain identifier.")
        base = _current_url(settings.DATABASES["default"])
        # Connect to the maintenance database: DATABASE_URL's own database may not exist yet.
        with psycopg.connect(urlunsplit(urlsplit(base)._replace(path="/postgres")), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        connections["default"].close()
        settings.DATABASES["default"]["NAME"] = name
        connections["default"].settings_dict["NAME"] = name
        call_command("migrate", verbosity=0, interactive=False)
        parts = urlsplit(base)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def _point_at_redis(self, url: str) -> None:
        from queues.connections import reset_connections

        os.environ["REDIS_URL"] = url
        settings.REDIS_URL = url
        for conf in settings.RQ_QUEUES.values():
            conf["URL"] = url
        reset_connections()


def _current_url(db: dict) -> str:
    user = db.get("USER") or "root"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
