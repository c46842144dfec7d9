"""A real redis-server for tests: started on 127.0.0.1 and a free port, no persistence; it can be
killed and restarted on the same port to simulate an outage. RedisClusterServers: three of them
joined into a Redis Cluster (masters only), each node restartable on its own."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


class RedisServer:
    def __init__(self, port: int | None = None, workdir: Path | None = None, *, durable: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        """durable: fsync every write to an append-only file in workdir, so data survives a kill."""
        self.port = port or free_port()
        self.workdir = workdir
        self.durable = durable
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        appendonly = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *appendonly]
        if self.workdir is not None:
            args += ["--dir", str(self.workdir)]
        elif self.durable:
            raise ValueError("a durable redis-server needs a workdir")
        args += self.extra_args
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: the outage case (no shutdown, no persistence, all data gone)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterServers:
    """Three masters (no replicas) in one Redis Cluster, as `redis-cli --cluster create` makes it.
    Durable nodes (an fsynced append-only file each) keep their data over a restart; with
    cluster-require-full-coverage off, the other nodes keep serving their slots while one is down."""

    def __init__(self, workdir: Path, nodes: int = 3, *, durable: bool = True) -> None:
        self.workdir = workdir
        self.nodes: list[RedisServer] = []
        for _ in range(nodes):
            port = free_port()
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisServer(port, node_dir, durable=durable, extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--cluster-port", str(free_port()),  # else port + 10000, which may be taken or past 65535
                "--cluster-require-full-coverage", "no")))

    @property
    def url(self) -> str:
        """What REDIS_URL says for this cluster: its nodes, any one of which is enough to find the others."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout_s: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok(timeout_s)
        return self

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node says cluster_state:ok and knows every other node is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._ok(node.port) for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Redis Cluster on {[n.port for n in self.nodes]} did not become ok")

    def _ok(self, port: int) -> bool:
        try:
            info = _command(port, "CLUSTER", "INFO")
            nodes = _command(port, "CLUSTER", "NODES")
        except OSError:
            return False
        return "cluster_state:ok" in info and "fail" not in nodes and nodes.count("connected") == len(self.nodes)

    def node_of(self, key: str) -> RedisServer:
        """The node serving the slot of `key`."""
        slot = int(_command(self.nodes[0].port, "CLUSTER", "KEYSLOT", key).strip().lstrip(":"))
        for line in _command(self.nodes[0].port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _command(port: int, *words: str) -> str:
    """One command over RESP, its bulk-string or simple answer as text (enough for CLUSTER INFO/NODES)."""
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(payload.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head[:1] in (b"+", b"-", b":"):
                return head[1:].decode() if head[:1] != b":" else head.decode()
            if head[:1] == b"$" and len(rest) >= int(head[1:]) + 2:
                return rest[: int(head[1:])].decode()
    raise OSError(f"no answer from port {port}")
