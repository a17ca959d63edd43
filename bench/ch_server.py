"""The ClickHouse HTTP loopback server (tests/clickhouse_http_server.py, over chDB) as the
benchmarks run it, from bench/ (the tests folder is not a package).

    .venv/bin/python bench/ch_server.py --path DIR [--port N]     # prints "READY <port>"
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
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
