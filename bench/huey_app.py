"""Imported by Huey's consumer (`huey_consumer bench.huey_app.huey`): the throughput baseline's instance."""

import os

from bench.competitors import huey_setup

huey, bench_noop = huey_setup(os.environ["BENCH_REDIS_URL"])
