"""A real WSGI server in a thread: the standard library's, one thread per request."""

from __future__ import annotations

from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from conftest import ThreadServer, free_port


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def serve(app: Any) -> ThreadServer:
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, server_class=_Threading, handler_class=_Quiet)

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return ThreadServer(httpd.serve_forever, stop, port)
