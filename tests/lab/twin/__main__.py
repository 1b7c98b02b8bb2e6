"""``python3 -m twin <command> ...`` (PYTHONPATH=tests/lab). Commands:

  migrate up|status     apply the Apex schema, sqlx-style (_sqlx_migrations)
  serve                 the HTTPS API (health, ready, live, metrics, admin, tasks)
  worker                the task worker (apex:tasks:queue -> tasks table)
  seed --size-mb N      fill agents/tasks/events with COPY up to ~N MB database size
  loadgen --rate R --duration S   submit tasks over HTTPS at a bounded rate
  state show|set K=V...|reset     read or change the desired-state file ($APEX_TWIN_STATE)
"""
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "migrate":
        from .migrate import main as run
    elif command == "serve":
        from .server import main as run
    elif command == "worker":
        from .worker import main as run
    elif command == "seed":
        from .seed import main as run
    elif command == "loadgen":
        from .loadgen import main as run
    elif command == "state":
        from .statecli import main as run
    else:
        print("unknown command %r\n%s" % (command, __doc__), file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
