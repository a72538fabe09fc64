"""--launch: the launcher starts a real process in its own session, waits for /health, and stops
only that process group."""

from __future__ import annotations

import sys

import pytest

from pumsearch.backends import BackendError, load_generator
from pumsearch.backends.remote import LaunchedServer, free_port

HEALTH_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_launched_server_is_waited_for_and_stopped():
    port = free_port()
    server = LaunchedServer([sys.executable, "-c", HEALTH_SERVER, str(port)], url=f"http://127.0.0.1:{port}")
    try:
        server.wait_healthy(timeout=30, poll=0.2)
        assert server.process.poll() is None
    finally:
        server.stop(grace=5)
    assert server.process.poll() is not None


def test_launched_server_that_exits_is_a_clear_error(tmp_path):
    server = LaunchedServer(
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        url="http://127.0.0.1:9",
        log_path=tmp_path / "server.log",
    )
    with pytest.raises(BackendError, match="exited with code 3 before it was ready; its log is"):
        server.wait_healthy(timeout=30, poll=0.2)
    server.stop()


def test_launch_without_sglang_names_the_extra(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendError, match=r"pip install 'pumsearch\[sglang\]'"):
        load_generator("some/model", backend="sglang-server", launch=True)


def test_launch_and_url_together_are_refused():
    with pytest.raises(ValueError, match=r"either --url .* or --launch"):
        load_generator("m", backend="sglang-server", launch=True, url="http://127.0.0.1:1")
