"""``python3 -m kubesim serve --lab-dir .lab --primary-port P1 --secondary-port P2``
(PYTHONPATH=tests/lab): the lab's two Kubernetes clusters in one process."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kubesim")
    sub = parser.add_subparsers(dest="cmd")
    from .app import add_serve_args
    add_serve_args(sub.add_parser("serve", help="serve the primary and secondary clusters"))
    args = parser.parse_args(argv)
    if args.cmd != "serve":
        parser.print_help()
        return 2
    from .app import serve
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
