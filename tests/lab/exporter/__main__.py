"""python3 -m exporter serve --port N  (PYTHONPATH=tests/lab; env: APEX_PG_ADMIN_DSN, KUBECONFIG)."""
import argparse
import sys

from .server import serve


def main(argv=None):
    parser = argparse.ArgumentParser(prog="exporter")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="serve /metrics/postgres and /metrics/kubernetes")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
