"""The ClickHouse HTTP loopback server (tests/clickhouse_http_server.py, over chDB) as the
benchmarks run it: the same server, with TCP_NODELAY on its sockets.

    .venv/bin/python bench/ch_server.py --path DIR [--port N]     # prints "READY <port>"

Why a launcher: the server answers with two writes (headers, then body) on keep-alive
connections; without TCP_NODELAY, Nagle's algorithm holds the body until the client's
delayed ACK (~40 ms on Linux), which would add tens of milliseconds to every query and
measure the test server instead of the clients. The benchmarks' emulator gets the same
setting (see ``bench/common.py: fast_emulator``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> int:
    module = common.clickhouse_server_module()
    if module is None:
        print("tests/clickhouse_http_server.py is missing", file=sys.stderr)
        return 2
    module._Handler.disable_nagle_algorithm = True
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
