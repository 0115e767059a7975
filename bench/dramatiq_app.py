"""Imported by Dramatiq's CLI (`python -m dramatiq bench.dramatiq_app`): the throughput baseline's broker."""

import os

from bench.competitors import dramatiq_setup

broker, bench_noop = dramatiq_setup(os.environ["BENCH_REDIS_URL"])
