"""A plain-Python process launcher for ROS 2 nodes (no `launch` package needed; it is not on PyPI).

Used by `flare-demo` and the tests: every node is a separate process, all in one private ROS domain
(`ROS_DOMAIN_ID`, localhost-only discovery) so parallel runs never see each other. Output goes to a log
file (never a pipe that could fill up and block the node).
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_counter = itertools.count()
_held_domains: list = []  # lock files kept open for the life of this process


def unique_domain_id() -> int:
    """A ROS domain id in 1..200 that no other live process of this machine holds: ids are tried from a
    pid-derived start and claimed with an exclusive lock on a file in the temp directory, released when
    this process exits."""
    import fcntl

    start = os.getpid() * 13 + next(_counter)
    for k in range(200):
        domain = 1 + (start + k) % 200
        f = open(Path(tempfile.gettempdir()) / f"flare_ros_domain_{domain}.lock", "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held_domains.append(f)
        return domain
    raise RuntimeError("no free ROS domain id in 1..200 on this machine")


def ros_env(domain_id: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; the range above replaces it
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def ros_args(params: dict | None = None, remap: dict | None = None, log_level: str | None = None) -> list[str]:
    """`--ros-args -p k:=v ...` for a parameter dict (bools/lists written the way rcl parses them)."""
    out = ["--ros-args"]
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = "[" + ",".join(str(x) for x in v) + "]"
        out += ["-p", f"{k}:={v}"]
    for a, b in (remap or {}).items():
        out += ["-r", f"{a}:={b}"]
    if log_level:
        out += ["--log-level", log_level]
    return out


class NodeProcess:
    """One node in a child process. `stop()` sends SIGINT (then SIGTERM, SIGKILL) and returns the exit code."""

    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: str | os.PathLike | None = None):
        self.name, self.cmd = name, cmd
        log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="flare-ros-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    @classmethod
    def python_module(cls, name: str, module: str, params: dict | None = None, *, env: dict,
                      log_dir=None, extra_args: list[str] | None = None, log_level: str | None = None):
        cmd = [sys.executable, "-m", module] + list(extra_args or []) + ros_args(params, log_level=log_level)
        return cls(name, cmd, env, log_dir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def send(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.alive():
            self.send(sig)
            if self.wait(timeout) is None:
                self.send(signal.SIGTERM)
                if self.wait(3.0) is None:
                    self.proc.kill()
                    self.proc.wait(5.0)
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
