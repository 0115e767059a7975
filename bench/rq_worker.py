"""A plain RQ worker without Django: the baseline every worker figure is compared with.

python -m bench.rq_worker --url redis://... --queue bench [--fork] [--burst]
"""

import argparse

from redis import Redis
from rq import Queue, SimpleWorker, Worker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", action="append", required=True)
    parser.add_argument("--fork", action="store_true", help="forking Worker instead of SimpleWorker")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--django", action="store_true", help="set Django up first (for ORM baseline jobs)")
    args = parser.parse_args()
    if args.django:
        import os

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")
        django.setup()
    conn = Redis.from_url(args.url)
    worker_class = Worker if args.fork else SimpleWorker
    worker = worker_class([Queue(name, connection=conn) for name in args.queue], connection=conn)
    worker.work(burst=args.burst, logging_level="WARNING")


if __name__ == "__main__":
    main()
