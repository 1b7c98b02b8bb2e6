"""``state show|set|reset``: read or change the desired-state file by hand (validated, atomic).

  python3 -m twin state show                       the effective state (defaults filled in)
  python3 -m twin state set maintenance_mode=true worker_ready_replicas=0
  python3 -m twin state set 'canary={"ready_replicas": 1, "version": "1.1.0"}'
  python3 -m twin state reset                      back to all defaults (empty document)

Values are parsed as JSON when they parse (true, 3, 0.5, null, {...}), else taken as strings.
The file is ``--file`` or ``$APEX_TWIN_STATE``.
"""
import argparse
import json

from .common import env
from .state import StateError, load, update_state, write_state


def main(argv):
    parser = argparse.ArgumentParser(prog="twin state", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["show", "set", "reset"])
    parser.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--file", default=env("APEX_TWIN_STATE"))
    args = parser.parse_intermixed_args(argv)
    if not args.file:
        parser.error("no state file: set APEX_TWIN_STATE or pass --file")
    try:
        if args.action == "set":
            changes = {}
            for item in args.assignments:
                key, sep, raw = item.partition("=")
                if not sep or not key:
                    parser.error("expected KEY=VALUE, got %r" % item)
                try:
                    changes[key] = json.loads(raw)
                except ValueError:
                    changes[key] = raw
            update_state(args.file, **changes)
        elif args.action == "reset":
            write_state(args.file, {})
        effective = load(args.file)
    except StateError as exc:
        print("twin state: error: %s (file unchanged)" % exc)
        return 1
    effective.pop("_unknown", None)
    print(json.dumps(effective, indent=2, sort_keys=True))
    return 0
