"""Real servers for tests, on free 127.0.0.1 ports: an OpenBao dev server and moto (fixed).

Binaries come from the virtualenv (the interpreter's bin directory is put first on PATH before
``shutil.which``). Each server gets its own HOME and an environment holding only what it needs:
for moto, dummy AWS credentials and a region (never real ones), so nothing can reach AWS.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
ROOT_TOKEN = "rotator-test-root"
AWS_REGION = "eu-west-1"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": AWS_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
MOTO_LAUNCHER = Path(__file__).with_name("moto_launcher.py")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tool(name: str) -> str:
    """The path of ``name`` from the virtualenv (the interpreter's bin dir first on PATH)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        raise RuntimeError(f"{name} not found; run scripts/venv.sh to install the dev tools")
    return found


@dataclass
class ServerProcess:
    """A started server: its URL, its process and its log file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Terminate the server and wait for it (kill after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _start(
    name: str, argv: list[str], workdir: Path, env: dict[str, str], url: str
) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return ServerProcess(name=name, url=url, process=process, log=log)


def _wait_ready(server: ServerProcess, probe: str, ok: set[int], ca: Path | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited early:\n{server.log_tail()}")
        try:
            context = ssl.create_default_context(cafile=str(ca)) if ca else None
            with urllib.request.urlopen(server.url + probe, timeout=2, context=context) as answer:
                if answer.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT}s:\n{server.log_tail()}")


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def start_openbao(workdir: Path, *, tls: bool = False) -> ServerProcess:
    """``bao server -dev`` on a free loopback port with root token :data:`ROOT_TOKEN`; its KV v2
    engine is mounted at ``secret/``. With ``tls``, it serves HTTPS with a generated CA written
    to :func:`openbao_ca` of ``workdir``."""
    port = free_port()
    argv = [
        tool("bao"),
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address={HOST}:{port}",
    ]
    if tls:
        (workdir / "tls").mkdir(parents=True, exist_ok=True)
        argv += ["-dev-tls", f"-dev-tls-cert-dir={workdir / 'tls'}"]
    scheme = "https" if tls else "http"
    server = _start("openbao", argv, workdir, _base_env(workdir), f"{scheme}://{HOST}:{port}")
    _wait_ready(server, "/v1/sys/health", {200}, ca=openbao_ca(workdir) if tls else None)
    return server


def openbao_ca(workdir: Path) -> Path:
    """The CA certificate a ``tls`` OpenBao dev server started in ``workdir`` generated."""
    return workdir / "tls" / "vault-ca.pem"


def start_moto(workdir: Path, *, initial_no_auth_actions: int | None = None) -> ServerProcess:
    """moto's server (with the fix in ``moto_launcher.py``) on a free loopback port.

    With ``initial_no_auth_actions`` = N, IAM access control is on: the first N AWS requests run
    unchecked (create users, policies and keys with them), every later one is checked against the
    caller's IAM policies.
    """
    port = free_port()
    env = _base_env(workdir) | DUMMY_AWS
    if initial_no_auth_actions is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(initial_no_auth_actions)
    argv = [sys.executable, str(MOTO_LAUNCHER), "-H", HOST, "-p", str(port)]
    server = _start("moto", argv, workdir, env, f"http://{HOST}:{port}")
    _wait_ready(server, "/moto-api/data.json", {200})
    return server
