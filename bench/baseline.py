"""Plain-RQ job functions for the baselines (no Django, no ledger)."""

import time


def noop():
    return None


def stamp(key: str, seq: int):
    """Record when the handler started (pickup baseline)."""
    from rq import get_current_job

    get_current_job().connection.rpush(key, f"{seq}:{time.time()}")
