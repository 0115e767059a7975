"""The two renderings of log records: compact console lines for people, JSON lines for machines."""

import json
import logging
import sys

import pytest

from queues.logs import ConsoleFormatter, ContextFilter, JsonFormatter, LoggerFloorFilter, log_context


def _record(name="queues.runner", level=logging.INFO, msg="job completed in %.3f s", args=(0.25,), exc_info=None):
    record = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    ContextFilter().filter(record)
    return record


def test_console_line_is_short_tagged_and_carries_short_ids():
    with log_context(request_id="0e12730263e14986b94c1685ff49825a", job_id="e93e6f6e-1234-5678-9abc-def012345678"):
        record = _record()
    line = ConsoleFormatter(process_tag="worker-database-1", colour=False).format(record)
    assert "\n" not in line and "\x1b" not in line
    time_, tag, level, logger, *rest = line.split()
    assert len(time_) == 8 and time_.count(":") == 2
    assert (tag, level, logger) == ("worker-database-1", "INFO", "queues.runner")
    assert line.endswith("job completed in 0.250 s  req=0e127302 job=e93e6f6e")


def test_console_colours_levels_and_process_roles_only_when_asked():
    coloured = ConsoleFormatter(process_tag="web", colour=True).format(_record(level=logging.WARNING))
    assert "\x1b[33mWARNING\x1b[0m" in coloured and "\x1b[36mweb" in coloured
    reconciler = ConsoleFormatter(process_tag="reconciler", colour=True).format(_record(level=logging.ERROR))
    assert "\x1b[34mreconciler" in reconciler and "\x1b[31;1mERROR" in reconciler
    # RQ colours parts of its messages itself; a plain console line drops those codes.
    plain = ConsoleFormatter(process_tag="web", colour=False).format(
        _record(name="rq.worker", msg="*** Listening on \x1b[32mdatabase\x1b[39;49;00m...", args=())
    )
    assert "\x1b" not in plain and plain.endswith("*** Listening on database...")


def test_console_puts_the_traceback_under_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(level=logging.ERROR, msg="job failed", args=(), exc_info=sys.exc_info())
    with log_context(job_id="abcdef0123456789"):
        ContextFilter().filter(record)
    first, *rest = ConsoleFormatter(process_tag="worker", colour=False).format(record).split("\n")
    assert first.endswith("job failed")
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def test_json_line_keeps_todays_fields_and_adds_the_process_tag():
    with log_context(request_id="req-1", job_id="job-1", job_type="test_echo", queue="database"):
        record = _record(msg="\x1b[32mdone\x1b[0m", args=())
    line = json.loads(JsonFormatter(process_tag="worker-database-1").format(record))
    assert line["message"] == "done" and line["level"] == "INFO" and line["logger"] == "queues.runner"
    assert (line["request_id"], line["job_id"], line["job_type"], line["queue"]) == (
        "req-1",
        "job-1",
        "test_echo",
        "database",
    )
    assert line["process"] == "worker-database-1" and line["ts"].endswith("Z")
    assert "process" not in json.loads(JsonFormatter().format(_record()))


def test_rq_floor_drops_rqs_chatter_below_its_level_and_nothing_else():
    floor = LoggerFloorFilter(prefixes=["rq"], level="WARNING")
    assert not floor.filter(_record(name="rq.worker", msg="cleaning registries", args=()))
    assert not floor.filter(_record(name="rq.scheduler", msg="Acquired scheduler lock", args=()))
    assert floor.filter(_record(name="rq.worker", level=logging.WARNING, msg="x", args=()))
    assert floor.filter(_record(name="queues.runner"))
    assert floor.filter(_record(name="rqlike.module"))  # a prefix is a logger name, not a string prefix
    with pytest.raises(ValueError):
        LoggerFloorFilter(prefixes=["rq"], level="LOUD")
