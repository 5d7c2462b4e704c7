"""`ServerProcess`: `python -m imgclf.serving` as a real subprocess on free loopback ports.

For tests and benchmarks:

    >>> with ServerProcess(["--model_name", "m", "--model_base_path", str(base)]) as server:
    ...     requests.get(f"{server.rest_url}/v1/models/m").json()
    ...     channel = grpc.insecure_channel(server.grpc_target)

The server binds free ports (`--port 0 --rest_api_port 0`) and announces them in a ready file;
entering the context waits for it (every model loaded, both ports listening). `stop()` sends
SIGTERM and waits; `log` is everything the server wrote to stdout and stderr.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import imgclf

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(imgclf.__file__)))


class ServerProcess:
    """A model server in a subprocess.

    Args:
        args: server flags (`--model_name/--model_base_path` or `--model_config_file`, ...), without
            `--port`, `--rest_api_port`, `--host` or `--ready_file`.
        timeout: seconds to wait for the server to become ready.
        env: extra environment variables.
    """

    def __init__(self, args, timeout=120, env=None):
        self.args = [str(a) for a in args]
        self.timeout = timeout
        self.env = env or {}
        self.process = None
        self.grpc_port = self.rest_port = None
        self._dir = None
        self._log = None

    @property
    def rest_url(self):
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self):
        return self.process.pid if self.process else None

    @property
    def returncode(self):
        return self.process.poll() if self.process else None

    @property
    def log(self):
        """What the server printed so far."""
        if self._dir is None:
            return ""
        with open(os.path.join(self._dir.name, "server.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def start(self):
        self._dir = tempfile.TemporaryDirectory(prefix="imgclf-serving-")
        ready = os.path.join(self._dir.name, "ready.json")
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The server imports the same imgclf as its parent, whichever checkout that is.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        env.update(self.env)
        command = [sys.executable, "-m", "imgclf.serving", "--host", "127.0.0.1", "--port", "0",
                   "--rest_api_port", "0", "--ready_file", ready, *self.args]
        self._log = open(os.path.join(self._dir.name, "server.log"), "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(ready):
            if self.process.poll() is not None:
                self._close_log()
                raise RuntimeError(f"server exited with code {self.process.returncode} before it was "
                                   f"ready; its log:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"server not ready within {self.timeout} s; its log:\n{self.log}")
            time.sleep(0.05)
        with open(ready, encoding="utf-8") as f:
            ports = json.load(f)
        self.grpc_port, self.rest_port = ports["grpc_port"], ports["rest_port"]
        return self

    def stop(self, timeout=60):
        """SIGTERM, then wait for the exit (SIGKILL after `timeout` s). Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.process.returncode

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
        # The log stays readable until the object is collected; the directory goes with it.
