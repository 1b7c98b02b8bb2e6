"""The Apex twin: a small stand-in for Apex (API, worker, migrator) used by the lab.

Run as ``PYTHONPATH=tests/lab python3 -m twin <command>``; see docs/twin.md.
"""
TWIN_VERSION = "0.1.0"
