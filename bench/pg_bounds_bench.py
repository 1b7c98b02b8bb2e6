"""Per-statement cost of postgres.connect (bounded cursor + lock watch) against plain psycopg: SELECT 1 x 2000.

Run: . .lab/env && python3 bench/pg_bounds_bench.py
"""
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".lab" / "collections"))
from ansible_collections.apex.ops.plugins.module_utils import postgres  # noqa: E402

PARAMS = dict(login_host=os.environ["PGHOST"], login_port=int(os.environ["PGPORT"]), login_user=os.environ["PGUSER"],
              login_password=os.environ["PGPASSWORD"], login_db=os.environ["PGDATABASE"], ssl_mode="disable",
              ca_cert=None, connect_timeout=5)
N = 2000


def per_statement_us(conn):
    started = time.perf_counter()
    for _ in range(N):
        conn.execute("SELECT 1").fetchone()
    return (time.perf_counter() - started) / N * 1e6


def main():
    plain = psycopg.connect(**postgres.connection_kwargs(PARAMS), autocommit=True)
    bounded = postgres.connect(PARAMS)
    for r in range(3):
        print("round %d: plain %.1f us/stmt, bounded %.1f us/stmt" % (r, per_statement_us(plain), per_statement_us(bounded)))


if __name__ == "__main__":
    main()
