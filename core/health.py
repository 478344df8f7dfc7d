"""The HTTP side of a worker process's metrics port: ``/livez``, ``/readyz`` and the
Prometheus metrics, served from a daemon thread.

The thread answers while the process's main thread runs a batch or a training
run, so probes and scrapes see a busy process as alive. Used by the extract
workers (workers.metrics) and the training worker (trainer.metrics); each
decides what live and ready mean for it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

#: ``() -> (live, ready, reason)``: the probes' answers; ``reason`` is the body of a 503.
Status = Callable[[], tuple[bool, bool, str]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes every few seconds would flood the worker's log."""


def health_app(registry: CollectorRegistry, status: Status) -> Callable[..., Iterable[bytes]]:
    """WSGI app: ``/livez`` and ``/readyz`` from ``status``, the metrics elsewhere."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/livez", "/readyz"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        live, ready, reason = status()
        ok = live if path == "/livez" else ready
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8")])
        return [b"ok\n" if ok else f"{reason}\n".encode()]

    return app


def start_server(port: int, addr: str, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    """Serve ``app`` on ``addr:port`` from a daemon thread; raises OSError when taken."""
    server = _Server6 if ":" in addr else _Server
    httpd = make_server(addr, port, app, server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="tiqu-metrics-http", daemon=True).start()
    return httpd
