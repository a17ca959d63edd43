"""A loopback server speaking enough of ClickHouse's HTTP interface for clickhouse-connect,
backed by chDB (the real ClickHouse engine, in-process).

Run it as its own process (chDB allows one data path per process, and the tests need
to stop and restart it like a real server)::

    python tests/clickhouse_http_server.py --path DIR [--port N]   # prints "READY <port>"

or drive it from a test with :class:`ServerProcess` (``start()``, ``stop()``, same port
across restarts).

What it implements: ``GET /ping``; queries in the ``query`` URL parameter and/or the
request body; ``param_*`` query parameters; every other unknown URL parameter is a
ClickHouse setting (applied with ``SET`` for the one query, then reset); INSERTs whose
body carries data after the statement line (written to a temporary file and loaded with
``INSERT ... FROM INFILE``); compressed request bodies (lz4/zstd/gzip/deflate);
``default_format``; the response headers clickhouse-connect reads
(``X-ClickHouse-Format``, ``-Summary``, ``-Query-Id``, ``-Timezone``,
``-Exception-Code``). Responses are never compressed. Queries run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

_CONTROL_PARAMS = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "enable_http_compression",
    "user",
    "password",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
    "role",
}
_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\s+(.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*$", re.IGNORECASE | re.DOTALL)
_SETTING_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = (encoding or "").lower()
    if not encoding or encoding == "identity":
        return data
    if encoding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(f"unsupported Content-Encoding {encoding}")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ChdbHttpBackend:
    """Runs ClickHouse SQL on one chDB connection, one query at a time."""

    def __init__(self, path: Path) -> None:
        import chdb

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / (self.path.name + "-http-tmp")
        self.tmp.mkdir(exist_ok=True)
        self.conn = chdb.connect(str(self.path))
        self.lock = threading.Lock()

    def run(
        self,
        sql: str,
        data: bytes,
        settings: dict[str, str],
        params: dict[str, str],
        database: str | None,
        default_format: str,
    ) -> tuple[bytes, str, dict]:
        insert = _INSERT_RE.match(sql) if data else None
        fmt_match = _FORMAT_RE.search(sql)
        fmt = fmt_match.group(1) if fmt_match else default_format
        tmpfile = None
        if insert:
            tmpfile = self.tmp / f"{uuid.uuid4().hex}.bin"
            tmpfile.write_bytes(data)
            sql = f"INSERT INTO {insert.group(1)} FROM INFILE {_quote(str(tmpfile))} FORMAT {insert.group(2)}"
            fmt = "TabSeparated"
        elif data:
            sql = sql + "\n" + data.decode("utf-8")
        try:
            with self.lock:
                if database:
                    self.conn.query(f"USE `{database}`", "TabSeparated")
                for k, v in settings.items():
                    self.conn.query(f"SET {k} = {_quote(v)}", "TabSeparated")
                try:
                    res = self.conn.query(sql, fmt, params=params) if params else self.conn.query(sql, fmt)
                finally:
                    for k in settings:
                        try:
                            self.conn.query(f"SET {k} = DEFAULT", "TabSeparated")
                        except Exception:
                            pass
                    if database:
                        self.conn.query("USE `default`", "TabSeparated")
            body = res.bytes() or b""
            summary = {
                "read_rows": str(
                    getattr(res, "rows_read", lambda: 0)() if callable(getattr(res, "rows_read", None)) else 0
                ),
                "written_rows": "0",
                "elapsed_ns": "0",
            }
            return body, ("TabSeparated" if insert else fmt), summary
        finally:
            if tmpfile is not None:
                try:
                    tmpfile.unlink()
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes on kept-alive connections; with Nagle on,
    # the body waits for the client's delayed ACK (~40 ms a query on Linux loopback).
    disable_nagle_algorithm = True
    backend: ChdbHttpBackend

    def log_message(self, fmt: str, *args) -> None:  # quiet
        return

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._read_chunked()
        else:
            raw = self.rfile.read(length) if length else b""
        self._handle(raw)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self.rfile.readline().strip()
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _handle(self, raw: bytes) -> None:
        url = urlparse(self.path)
        if url.path.rstrip("/") == "/ping":
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain"})
            return
        qs = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = qs.get("query_id") or str(uuid.uuid4())
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
            sql = qs.get("query", "")
            data = b""
            if body:
                if sql:
                    data = body  # statement in the URL, data (or the rest of the statement) in the body
                else:
                    nl = body.find(b"\n")
                    head = body if nl < 0 else body[:nl]
                    if _INSERT_RE.match(head.decode("utf-8", "replace")) and nl >= 0:
                        sql, data = head.decode("utf-8"), body[nl + 1 :]
                    else:
                        sql = body.decode("utf-8")
            if sql and data and not _INSERT_RE.match(sql):
                sql, data = sql + "\n" + data.decode("utf-8"), b""
            params = {k[6:]: v for k, v in qs.items() if k.startswith("param_")}
            settings = {
                k: v
                for k, v in qs.items()
                if k not in _CONTROL_PARAMS and not k.startswith("param_") and _SETTING_RE.match(k)
            }
            out, fmt, summary = self.backend.run(
                sql, data, settings, params, qs.get("database") or None, qs.get("default_format") or "TabSeparated"
            )
            self._send(
                200,
                out,
                {
                    "Content-Type": "application/octet-stream",
                    "X-ClickHouse-Format": fmt,
                    "X-ClickHouse-Query-Id": query_id,
                    "X-ClickHouse-Summary": json.dumps(summary),
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "chdb-loopback",
                },
            )
        except Exception as exc:  # report like ClickHouse does
            msg = str(exc)
            m = re.search(r"Code: (\d+)", msg)
            code = m.group(1) if m else "1000"
            self._send(
                500,
                f"Code: {code}. DB::Exception: {msg}\n".encode(),
                {
                    "Content-Type": "text/plain",
                    "X-ClickHouse-Exception-Code": code,
                    "X-ClickHouse-Query-Id": query_id,
                },
            )


class ClickHouseHttpServer:
    """The server in this process (see :class:`ServerProcess` to run it in its own)."""

    def __init__(self, path: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.backend = ChdbHttpBackend(path)
        handler = type("Handler", (_Handler,), {"backend": self.backend})
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> ClickHouseHttpServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.backend.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The server as a child process, stoppable and restartable on the same port."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--path", str(self.path), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        line = self.proc.stdout.readline()  # "READY <port>" once listening
        if not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"ClickHouse loopback server did not start: {line!r} {err[-2000:]}")
        if time.monotonic() > deadline:  # pragma: no cover
            raise RuntimeError("ClickHouse loopback server too slow to start")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = ClickHouseHttpServer(Path(args.path), args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    server.start()
    print(f"READY {server.port}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
