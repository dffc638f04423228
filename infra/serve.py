"""A local stack in one command (`gen4gen serve`, `make serve`).

Starts, on 127.0.0.1 only:
  - a Prefect server (SQLite under the state folder, analytics off),
  - an S3-API server (moto's standalone server; any S3 endpoint in production) with the
    dataset bucket created (tasks persist no results: no result bucket or block is needed),
  - a process work pool and a worker polling it.
Runs until Ctrl-C (or SIGTERM, or `gen4gen serve --stop`), then stops every process it
started, each in its own process group (the worker's flow-run subprocesses included).
The state folder holds serve.json (URLs and process ids), the database and the logs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DATASETS_BUCKET = "gen4gen-datasets"
POOL = "gen4gen-cpu"
RETENTION = "P30D"  # how long the stack's Prefect keeps a flow run (ISO 8601 duration)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready at {url} after {seconds:.0f} s")


@dataclass
class Stack:
    state: Path
    port: int = 4200
    s3_port: int = 9000
    pool: str = POOL
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The environment of every process of the stack (and what a client needs)."""
        home = self.state / "prefect"
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
        # The database stays bounded: Prefect's vacuum service deletes flow runs (with their
        # task runs, logs and artifacts) after RETENTION, and events after their own 7 days.
        # An operator's own values, if set, win.
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", '["events", "flow_runs"]')
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD", RETENTION)
        # moto accepts any credentials; real ones, if set, stay as they are (never printed).
        env.setdefault("AWS_ACCESS_KEY_ID", "gen4gen-local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "gen4gen-local")
        return env

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.state / f"{name}.log", "ab")
        # Own session: a signal for the group reaches the process's own children too.
        proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.state)
        self.procs[name] = proc
        self._write_state()
        return proc

    def _write_state(self) -> None:
        info = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "ui_url": self.api_url.removesuffix("/api"),
            "s3_endpoint": self.s3_url,
            "pool": self.pool,
            "buckets": [DATASETS_BUCKET],
            "processes": {n: p.pid for n, p in self.procs.items()},
        }
        (self.state / "serve.json").write_text(json.dumps(info, indent=2))

    def start(self, timeout: float = 180) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "prefect").mkdir(exist_ok=True)
        py = sys.executable
        s3 = self._spawn("s3", [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)])
        server = self._spawn("server", [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)])
        _wait(f"{self.s3_url}/moto-api/", timeout, s3, "S3 server")
        self._buckets()
        _wait(f"{self.api_url}/health", timeout, server, "Prefect server")
        self._prefect(["work-pool", "create", self.pool, "--type", "process", "--overwrite"])
        self._spawn("worker", [py, "-m", "prefect", "worker", "start", "--pool", self.pool, "--type", "process", "--name", f"{self.pool}-local"])

    def _buckets(self) -> None:
        import boto3

        env = self.env()
        s3 = boto3.client(
            "s3", endpoint_url=self.s3_url, region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in (DATASETS_BUCKET,):
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)

    def _prefect(self, args: list[str]) -> None:
        subprocess.run([sys.executable, "-m", "prefect", *args], env=self.env(), check=True, capture_output=True, timeout=120)

    def stop(self, grace: float = 15) -> None:
        """SIGINT every process group (worker first), as Ctrl-C in a terminal would: each of
        them shuts down cleanly on it within seconds; SIGKILL what is left after `grace`."""
        order = [n for n in ("worker", "server", "s3") if n in self.procs]
        for name in order:
            _signal_group(self.procs[name].pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # stragglers in the group (flow-run children)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        state = self.state / "serve.json"
        if state.exists():
            state.unlink()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def serve(state: Path, port: int, s3_port: int, pool: str = POOL, out=print) -> int:
    """Start the stack, print how to use it, and wait for Ctrl-C or SIGTERM."""
    stack = Stack(state=state, port=port, s3_port=s3_port, pool=pool)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        out(
            f"ready: Prefect UI {stack.api_url.removesuffix('/api')}, S3 endpoint {stack.s3_url}, "
            f"work pool {pool!r}, bucket s3://{DATASETS_BUCKET}\n"
            f"  in another shell:  export PREFECT_API_URL={stack.api_url} AWS_ENDPOINT_URL={stack.s3_url}\n"
            f"  (AWS credentials: any values for this local S3 server)\n"
            f"  stop: Ctrl-C here, or gen4gen serve --stop --state {state}"
        )
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        out(f"stopping: {', '.join(dead)} exited (see {state}/<name>.log)")
        return 1
    except KeyboardInterrupt:
        out("stopping")
        return 0
    finally:
        stack.stop()
        out("stopped")


def stop(state: Path, timeout: float = 60) -> int:
    """Ask a running `gen4gen serve` (found through its state file) to stop, and wait."""
    path = state / "serve.json"
    if not path.exists():
        print(f"nothing to stop: no {path}", file=sys.stderr)
        return 1
    info = json.loads(path.read_text())
    try:
        os.kill(info["pid"], signal.SIGTERM)
    except ProcessLookupError:  # the serve process is gone: stop what it left behind
        for pid in info["processes"].values():
            _signal_group(pid, signal.SIGKILL)
        path.unlink()
        return 0
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    return 0 if not path.exists() else 1
