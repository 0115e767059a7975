"""The test provider stand-in (tests/fake_llm.py) in a process of its own, for load scenarios.

    python -m bench.llm_server --chunks 20 --reply-seconds 5

Prints one JSON line (`base_url`, `api_key`, `text`) once it listens, then serves until SIGTERM.
Every streamed reply is `text` in `chunks` deltas spread evenly over `reply-seconds`. Run apart from
the bench so that a thousand open streams neither share the bench's interpreter nor count as its CPU.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import subprocess
import sys
import threading


def reply_text(chunks: int) -> str:
    return " ".join(f"word{i}" for i in range(chunks))


def main():
    from tests.fake_llm import Behaviour, FakeLLM

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--reply-seconds", type=float, default=5.0)
    args = parser.parse_args()
    # A thousand simultaneous connections: the default listen backlog (5) would leave clients in SYN retries.
    http.server.ThreadingHTTPServer.request_queue_size = 4096
    fake = FakeLLM().start()
    fake._server.handle_error = lambda request, address: None  # clients hanging up on keep-alive: not news
    text = reply_text(args.chunks)
    fake.always(Behaviour(text=text, delay_per_chunk=args.reply_seconds / args.chunks))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"base_url": fake.base_url, "api_key": fake.api_key, "text": text}), flush=True)
    stop.wait()
    fake.stop()


class ProviderProcess:
    """Starts `python -m bench.llm_server` and reads its address; `stop()` ends it."""

    def __init__(self, *, chunks: int, reply_seconds: float, cwd, log_path):
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.llm_server", "--chunks", str(chunks), "--reply-seconds", str(reply_seconds)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        line = self.popen.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the provider stand-in did not start; see {log_path}")
        info = json.loads(line)
        self.base_url, self.api_key, self.text = info["base_url"], info["api_key"], info["text"]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen.stdout.close()
        self._log.close()


if __name__ == "__main__":
    main()
