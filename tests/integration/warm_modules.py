"""Run the collection's modules as ``python -m`` would, from a warm interpreter (the tests' ``run_module``).

A module started with ``python -m`` spends ~0.3 s of CPU starting Python and importing
``ansible.module_utils.basic``, psycopg, urllib3, cryptography and the like before it does anything,
and the integration tests run modules some 400 times per suite. So a server process imports those
third-party libraries once and forks a child per run. The child is a process of its own, as under
Ansible: its own pid, the environment, working directory, stdout/stderr and exit code it is given,
an interpreter that exits normally (atexit handlers run). It then runs the module with
``runpy.run_module(..., run_name="__main__")``, which is what ``python -m`` does. Only third-party
libraries are imported ahead: the collection's own code is imported by each child from the
checkout, so an edit is seen at the next run.

``WarmModuleRunner.run`` returns a ``subprocess.CompletedProcess`` and raises
``subprocess.TimeoutExpired``, like ``subprocess.run``. When the server is busy (two threads of a
test running modules at once) or gone, or when a run sets a ``PYTHON*`` variable of its own (they
act at interpreter start-up), the run is a plain ``python -m`` process.
"""
import atexit
import gc
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

# Imported once by the server: what the collection's modules import, costly to import each time.
WARM_IMPORTS = (
    "ansible.module_utils.basic", "psycopg", "urllib3", "yaml", "redis", "boto3", "cryptography.x509",
    "cryptography.hazmat.primitives.serialization",
)


def _child(request, base_path):
    """In the forked child: become the module's process, then run the module as ``python -m``."""
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"]] + extra + base_path
    sys.argv[:] = ["-m"] + request["args"]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # pylint: disable=broad-exception-caught  # reported as the interpreter would
        traceback.print_exc()
        code = 1
    # An interpreter's exit, without tearing down the modules the server imported (that costs more
    # than the run): the atexit handlers, the streams flushed, then out.
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def _exit_code(value):
    """The exit status ``sys.exit(value)`` gives an interpreter."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _wait(pid, timeout):
    """The child's return code (negative: killed by that signal); None when it ran out of time."""
    fd = os.pidfd_open(pid)
    try:
        ready = select.select([fd], [], [], timeout)[0]
    finally:
        os.close(fd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def serve():
    """The server: one JSON request per line on stdin, one JSON answer per line on stdout."""
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.freeze()  # what the server imported stays out of the children's collections (no copy-on-write)
    own = set(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    base_path = [p for p in sys.path[1:] if p not in own]
    channel = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        channel.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, base_path)  # ends with os._exit
        returncode = _wait(pid, request["timeout"])
        channel.write(json.dumps({"returncode": returncode}) + "\n")
        channel.flush()


class WarmModuleRunner:
    """Client side, one per pytest process; the server starts at the first run."""

    def __init__(self, env, cwd):
        self.env = dict(env)
        self.cwd = str(cwd)
        self.lock = threading.Lock()
        self.proc = None
        self.broken = False

    def _server(self):
        if self.proc is None:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env=self.env, cwd=self.cwd)
        return self.proc

    def run(self, module, args, env=None, timeout=300):
        """Run ``python -m <module> <args...>`` with ``env`` (default: the runner's) in the runner's cwd."""
        env = dict(self.env if env is None else env)
        cmd = [sys.executable, "-m", module] + list(args)
        if self.broken or not self._warm_fits(env) or not self.lock.acquire(blocking=False):
            return self._cold(cmd, env, timeout)
        try:
            with tempfile.TemporaryDirectory(prefix="warm-module-") as tmp:
                out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
                request = {"module": module, "args": cmd[3:], "env": env, "cwd": self.cwd, "timeout": timeout,
                           "stdout": out, "stderr": err}
                server = self._server()
                try:
                    server.stdin.write(json.dumps(request) + "\n")
                    server.stdin.flush()
                    answer = server.stdout.readline()
                except (OSError, ValueError):
                    answer = ""
                if not answer:
                    self.broken = True
                    return self._cold(cmd, env, timeout)
                returncode = json.loads(answer)["returncode"]
                with open(out, encoding="utf-8", errors="replace") as handle:
                    stdout = handle.read()
                with open(err, encoding="utf-8", errors="replace") as handle:
                    stderr = handle.read()
                if returncode is None:
                    raise subprocess.TimeoutExpired(cmd, timeout, output=stdout, stderr=stderr)
                return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)
        finally:
            self.lock.release()

    def _warm_fits(self, env):
        """Whether a run with ``env`` can come from the server: the PYTHON* variables (PYTHONPATH,
        PYTHONPROFILEIMPORTTIME, PYTHONWARNINGS...) act when an interpreter starts, so they must be
        the server's own."""
        keys = set(k for k in env if k.startswith("PYTHON")) | set(k for k in self.env if k.startswith("PYTHON"))
        return all(env.get(k) == self.env.get(k) for k in keys)

    def _cold(self, cmd, env, timeout):
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=self.cwd, check=False)

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc = None


if __name__ == "__main__":
    serve()
