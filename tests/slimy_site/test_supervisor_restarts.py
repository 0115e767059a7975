"""runall's supervisor: a child that dies after running fine is replaced at once (a killed worker's
replacement takes its jobs over sooner); a child that keeps dying backs off."""

import sys
import threading
import time

from slimy_site.runall import Child, Supervisor


def _supervise(child: Child, until) -> list[str]:
    lines: list[str] = []
    supervisor = Supervisor([child], {}, log=lines.append, stop_timeout=5)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not until(lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.request_stop()
    thread.join(10)
    return lines


def test_a_crash_loop_backs_off_but_the_first_restart_is_immediate():
    child = Child("crashy", [sys.executable, "-c", "raise SystemExit(3)"])
    lines = _supervise(child, lambda lines: sum("restarting in" in line for line in lines) >= 2)
    delays = [line.rsplit("restarting in ", 1)[1] for line in lines if "restarting in" in line]
    assert delays[:2] == ["0 s", "2 s"], lines


def test_a_child_that_ran_long_enough_starts_over_without_back_off(monkeypatch):
    monkeypatch.setattr("slimy_site.runall.STABLE_SECONDS", 0.5)
    child = Child("steady", [sys.executable, "-c", "import time; time.sleep(0.8); raise SystemExit(3)"])
    lines = _supervise(child, lambda lines: sum("restarting in" in line for line in lines) >= 3)
    delays = [line.rsplit("restarting in ", 1)[1] for line in lines if "restarting in" in line]
    assert delays[:3] == ["0 s", "0 s", "0 s"], lines
