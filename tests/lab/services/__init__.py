"""The lab's services, one module each, driven by ``tests/lab/lab.py`` (the command line and
orchestrator): ``postgres``, ``redis``, ``moto``, ``kubesim``, ``twin``, ``webhook_sink``; the lab CA (``pki``);
``.lab/env`` (``env``); what must be installed (``deps``); whether a running Python service runs
today's code (``code_fingerprint``). Shared: ``procs`` (pids, start/stop, ports, readiness
waits) and ``state`` (directory layout, ports.json, secrets.json, the lock). Standard library
only at import time."""
