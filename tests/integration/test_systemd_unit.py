"""systemd/rotator.service: it verifies, it scores, and rotator runs the way it makes it run.

**Verify.** ``systemd-analyze verify`` checks that ExecStart='s binary exists, and the unit names
the installed one (``/opt/rotator/bin/rotator``), which this machine does not have. The tests
therefore verify (and score) a temporary copy whose ExecStart names this virtualenv's
``rotator`` instead, the only change. verify exits 0 even for a directive it ignores (it just
warns), so a clean unit is one whose verify prints nothing.

**Exposure.** ``systemd-analyze security --offline=true --threshold=20`` fails above 2.0: the
threshold is on the 0-100 scale the tool computes with (it prints tenths of it, 0.0-10.0).

**W^X.** ``MemoryDenyWriteExecute=yes`` forbids writable-and-executable memory. systemd 252 does it
with a seccomp filter (mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC, shmat
with SHM_EXEC: EPERM); later versions use the kernel's ``prctl(PR_SET_MDWE,
PR_MDWE_REFUSE_EXEC_GAIN)`` where it exists (no W+X mapping, no mapping gaining PROT_EXEC:
EACCES). This module is also a launcher (``python -m tests.integration.test_systemd_unit``) that
applies either rule, or both, plus NoNewPrivileges, then ``exec``s a command: both rules survive
``execve``, so the command (the real ``rotator``) starts and runs under them from its first
instruction.

**System call filter.** The launcher can also load the unit's ``SystemCallFilter=`` (an allow
list: ``@system-service`` without ``@privileged`` and ``@resources``, plus the calls systemd always
allows; EPERM for the rest, as ``SystemCallErrorNumber=EPERM``; other ABIs refused, as
``SystemCallArchitectures=native``), built from ``systemd-analyze syscall-filter``. So rotator's
imports, a rotation and the daemon are run under W^X and that filter together. The other
sandbox settings (namespaces, read-only file system, dynamic user) need systemd itself and are
left to ``verify`` and ``security``.

**Environment contract.** Under the unit, systemd hands rotator ``NOTIFY_SOCKET``,
``WATCHDOG_USEC``, ``CREDENTIALS_DIRECTORY`` and ``STATE_DIRECTORY``; the daemon test plays
systemd's part with a real datagram socket (the protocol details are in
tests/unit/test_daemon_systemd.py).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import importlib.machinery
import importlib.metadata
import json
import mmap
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import yaml

if TYPE_CHECKING:
    from rotator.config import Config
    from tests.support.stack import Stack

# rotator's own modules are imported inside the tests that use them, not here: this module is
# also the launcher, started twice per W^X test, and importing the daemon costs seconds.

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "rotator.service"
EXAMPLE_CONFIG = ROOT / "systemd" / "rotator.yaml.example"
GUIDE = ROOT / "docs" / "deploy" / "systemd.md"
REQUIREMENTS = ROOT / "requirements" / "main.txt"
INSTALLED = "/opt/rotator/bin/rotator"
ROTATOR = str(Path(sys.executable).with_name("rotator"))
LAUNCHER = [sys.executable, "-m", "tests.integration.test_systemd_unit"]
MAX_EXPOSURE = 2.0
EXPOSURE_LINE = re.compile(r"^.*Overall exposure level for \S+: (\d+\.\d+).*$", re.MULTILINE)
GUARD = 60.0
"""Seconds any awaited process or datagram may take before the test gives up (a hang guard)."""

# -- systemd-analyze ----------------------------------------------------------------------------


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: run scripts/ensure-tools (package systemd)")
    return subprocess.run(
        [tool, *args],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )


def local_unit(directory: Path, text: str | None = None) -> Path:
    """``text`` (default: the shipped unit) as ``directory/rotator.service``, its ExecStart
    naming this virtualenv's rotator instead of the installed one."""
    text = UNIT.read_text() if text is None else text
    assert text.count(f"ExecStart={INSTALLED} ") == 1, "ExecStart must name " + INSTALLED
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rotator.service"
    path.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={ROTATOR} "))
    return path


def exposure(unit: Path) -> tuple[float, str, int]:
    """The overall exposure of ``unit``, its line, and the exit status at the 2.0 threshold."""
    threshold = round(MAX_EXPOSURE * 10)
    result = systemd_analyze("security", "--offline=true", f"--threshold={threshold}", str(unit))
    match = EXPOSURE_LINE.search(result.stdout)
    assert match, f"no exposure line in: {result.stdout[-500:]} {result.stderr}"
    return float(match.group(1)), match.group(0), result.returncode


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit without a single warning."""
    result = systemd_analyze("verify", str(local_unit(tmp_path)))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (lambda unit: unit.replace("\nProtectSystem=", "\nProtectSytem="), "ProtectSytem"),
        (lambda unit: unit.replace(f"={ROTATOR} ", "=/opt/nowhere/rotator "), "not executable"),
        (
            lambda unit: unit.replace(
                "SetCredential=vault-token:\\n", "SetCredential=vault-token:"
            ),
            "Invalid syntax",
        ),
    ],
    ids=["typo", "missing-binary", "empty-credential"],
)
def test_verify_catches_a_broken_unit(
    tmp_path: Path, broken: Callable[[str], str], complaint: str
) -> None:
    """A typo'd directive, an ExecStart binary that does not exist or an invalid SetCredential=
    makes verify speak up (the check above can fail)."""
    unit = local_unit(tmp_path)
    unit.write_text(broken(unit.read_text()))
    result = systemd_analyze("verify", str(unit))
    assert complaint in result.stdout + result.stderr


def test_exposure_is_at_most_two(tmp_path: Path) -> None:
    """``systemd-analyze security --offline=true`` scores the unit at or below 2.0, and passes
    its ``--threshold``."""
    score, line, status = exposure(local_unit(tmp_path))
    assert score <= MAX_EXPOSURE, line
    assert status == 0, line


def test_a_bare_unit_fails_the_threshold(tmp_path: Path) -> None:
    """The same ExecStart without the sandbox scores far above 2.0 and fails the threshold."""
    bare = f"[Unit]\nDescription=bare\n\n[Service]\nExecStart={INSTALLED} run\n"
    score, line, status = exposure(local_unit(tmp_path, bare))
    assert score > MAX_EXPOSURE, line
    assert status != 0, line


def directives(unit: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of each key in order."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_unit_fits_the_daemon() -> None:
    """The unit matches what rotator run does: notify from the main process only, a stop timeout
    above the daemon's longest stop (from its own timings and the slowest leader release), a
    watchdog several heartbeats long, and the W^X rule and NoNewPrivileges that the runtime tests
    below apply."""
    from rotator.daemon.leader import Timing, release_bound
    from rotator.daemon.runner import Timings

    unit = directives(UNIT.read_text())
    timings = Timings()
    release = max(release_bound(e, Timing()) for e in ("none", "postgres", "kubernetes"))
    assert (unit["Type"], unit["NotifyAccess"]) == (["notify"], ["main"])
    assert seconds(unit["TimeoutStopSec"][0]) >= timings.stop_bound(release) + 5
    assert seconds(unit["WatchdogSec"][0]) >= 4 * timings.heartbeat
    assert unit["MemoryDenyWriteExecute"] == unit["NoNewPrivileges"] == ["yes"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == unit["ConfigurationDirectory"] == ["rotator"]
    assert unit["ExecStart"] == [
        f"{INSTALLED} --log-format json --strict-permissions run --config /etc/rotator/rotator.yaml"
    ]


def test_unit_keeps_restarting_until_its_dependencies_are_up() -> None:
    """No start limit (StartLimitIntervalSec=0): dependencies unreachable for minutes at boot
    never leave the unit failed for good; restarts are paced, and exit status 2 (an invalid
    configuration) is never restarted."""
    unit = directives(UNIT.read_text())
    assert unit["StartLimitIntervalSec"] == ["0"]
    assert "StartLimitBurst" not in unit
    assert unit["Restart"] == ["on-failure"]
    assert seconds(unit["RestartSec"][0]) >= 30
    assert unit["RestartPreventExitStatus"] == ["2"]


def test_example_config_reads_every_credential(tmp_path: Path) -> None:
    """systemd/rotator.yaml.example loads with the unit's credential names and state directory;
    an optional credential left to its empty SetCredential= fallback is named in the error."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in ("mistral-admin-key", "vault-token", "admin-token", "webhook-url"):
        (creds / name).write_text(f"{name}-value\n")
    unit = UNIT.read_text()
    for path in creds.iterdir():
        assert f"LoadCredential={path.name}:/etc/rotator/credentials/{path.name}\n" in unit
    from rotator.config import load_config
    from rotator.errors import ConfigError

    env = {"CREDENTIALS_DIRECTORY": str(creds), "STATE_DIRECTORY": "/var/lib/rotator"}
    cfg = load_config(EXAMPLE_CONFIG, env=env)
    assert cfg.mistral.admin_key.reveal() == "mistral-admin-key-value"
    assert cfg.state.url == "sqlite:////var/lib/rotator/state.db"
    (creds / "vault-token").write_text("\n")  # what SetCredential=vault-token:\n leaves
    with pytest.raises(ConfigError, match=r"auth\.token_file: the file named by .* is empty"):
        load_config(EXAMPLE_CONFIG, env=env)


def guide_blocks() -> list[str]:
    """The ``sh`` code blocks of the install guide, line continuations joined."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return [block.replace("\\\n", " ") for block in blocks]


def load_with_credentials(tmp_path: Path, names: set[str]) -> Config:
    """systemd/rotator.yaml.example loaded with exactly the credential files ``names``."""
    creds = Path(tempfile.mkdtemp(dir=tmp_path))
    for name in names:
        (creds / name).write_text(f"{name}-value\n")
    from rotator.config import load_config

    env = {"CREDENTIALS_DIRECTORY": str(creds), "STATE_DIRECTORY": "/var/lib/rotator"}
    return load_config(EXAMPLE_CONFIG, env=env)


def test_following_the_guide_literally_gives_a_config_that_loads(tmp_path: Path) -> None:
    """The credentials section 4 of the guide creates are all the example configuration needs,
    and each one-off ``systemd-run`` command of the guide hands over enough of them: the example
    loads with exactly those files (no "the file named by ... is empty", exit 2)."""
    blocks = guide_blocks()
    created = {
        name
        for block in blocks
        for name in re.findall(r"cat > /etc/rotator/credentials/([\w-]+)'", block)
    }
    assert "mistral-admin-key" in created
    cfg = load_with_credentials(tmp_path, created)
    assert cfg.mistral.admin_key.reveal() == "mistral-admin-key-value"
    one_offs = [b for b in blocks if "systemd-run" in b and "/bin/rotator " in b]
    assert len(one_offs) >= 2, "the guide's systemd-run commands were not found"
    for block in one_offs:
        loaded = set(re.findall(r"-p LoadCredential=([\w-]+):", block))
        assert loaded <= created, f"a one-off loads a credential the guide never creates: {block}"
        load_with_credentials(tmp_path, loaded)


def test_the_guide_creates_the_venv_with_a_python_rotator_supports() -> None:
    """The guide's ``-m venv`` names a versioned interpreter at least pyproject's requires-python
    (a bare ``python3`` is 3.9 on RHEL 9)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    assert required, project["requires-python"]
    minimum = tuple(map(int, required.groups()))
    venvs = [m for b in guide_blocks() for m in re.findall(r"(\S+) -m venv", b)]
    assert venvs, "the guide's venv command was not found"
    for interpreter in venvs:
        version = re.fullmatch(r"python(\d+)\.(\d+)", interpreter)
        assert version, f"{interpreter}: name the interpreter's version, like python3.11"
        assert tuple(map(int, version.groups())) >= minimum, interpreter


# -- W^X: the launcher --------------------------------------------------------------------------

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
AUDIT_ARCH_X86_64 = 0xC000003E
NR_MMAP, NR_MPROTECT, NR_SHMAT, NR_PKEY_MPROTECT = 9, 10, 30, 329  # x86_64
SHM_EXEC, IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0o100000, 0, 0o1000, 0
PROT_RWX = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
LD_W_ABS, JEQ_K, AND_K, RET_K = 0x20, 0x15, 0x54, 0x06
ARG2 = 32  # offsetof(struct seccomp_data, args[2]), its low 32 bits (little-endian)


def _seccomp_wx_program() -> list[tuple[int, int, int, int]]:
    """systemd 252's MemoryDenyWriteExecute= rule as classic BPF (code, jt, jf, k), x86_64."""

    def refuse_when(bits: int) -> list[tuple[int, int, int, int]]:
        """5 instructions: EPERM if (args[2] & bits) == bits, else allow."""
        return [
            (LD_W_ABS, 0, 0, ARG2),
            (AND_K, 0, 0, bits),
            (JEQ_K, 0, 1, bits),
            (RET_K, 0, 0, RET_EPERM),
            (RET_K, 0, 0, RET_ALLOW),
        ]

    return [
        (LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_ALLOW),  # SystemCallArchitectures=native refuses the others
        (LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (JEQ_K, 4, 0, NR_MMAP),  # -> 9
        (JEQ_K, 8, 0, NR_MPROTECT),  # -> 14
        (JEQ_K, 7, 0, NR_PKEY_MPROTECT),  # -> 14
        (JEQ_K, 11, 0, NR_SHMAT),  # -> 19
        (RET_K, 0, 0, RET_ALLOW),
        *refuse_when(mmap.PROT_WRITE | mmap.PROT_EXEC),  # 9
        *refuse_when(mmap.PROT_EXEC),  # 14
        *refuse_when(SHM_EXEC),  # 19
    ]


def _seccomp_allow_program(numbers: list[int]) -> list[tuple[int, int, int, int]]:
    """SystemCallFilter= with SystemCallErrorNumber=EPERM and SystemCallArchitectures=native as
    classic BPF, x86_64: the listed system calls pass, any other (or another ABI's) gets EPERM."""
    allow = [
        op for nr in sorted(set(numbers)) for op in ((JEQ_K, 0, 1, nr), (RET_K, 0, 0, RET_ALLOW))
    ]
    return [
        (LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_EPERM),
        (LD_W_ABS, 0, 0, 0),  # seccomp_data.nr (x32 calls carry bit 30: never listed)
        *allow,
        (RET_K, 0, 0, RET_EPERM),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _prctl(libc: ctypes.CDLL, *args: Any) -> None:
    if libc.prctl(*(ctypes.c_ulong(a) if isinstance(a, int) else a for a in args)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl{args[:2]}: {os.strerror(code)}")


def restrict(mode: str, allowed_syscalls: list[int] | None = None) -> None:
    """Apply NoNewPrivileges, the W^X rule ``mode`` (mdwe, seccomp, both or none) and, if
    given, an allow list of system call numbers (others fail with EPERM)."""
    if mode not in {"mdwe", "seccomp", "both", "none"}:
        raise SystemExit(f"unknown W^X mode {mode!r}: mdwe, seccomp, both or none")
    if mode != "none" and os.uname().machine != "x86_64":
        raise SystemExit("the seccomp programs here are written for x86_64")
    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if mode in {"mdwe", "both"}:
        _prctl(libc, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)
        assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) == PR_MDWE_REFUSE_EXEC_GAIN
    if mode in {"seccomp", "both"}:
        _load_seccomp(libc, _seccomp_wx_program())
    if allowed_syscalls is not None:  # last: installing filters needs prctl and seccomp
        _load_seccomp(libc, _seccomp_allow_program(allowed_syscalls))


def _load_seccomp(libc: ctypes.CDLL, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("<HBBI", *op) for op in program)
    prog = _SockFprog(len(code) // 8, code)
    _prctl(libc, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)


def probe() -> dict[str, str]:
    """Try what W^X forbids (a W+X mapping, a RW mapping made executable by mprotect or
    pkey_mprotect, an executable System V shared memory attach) and a system call the unit's
    filter refuses (sched_setaffinity, in @resources); the errno name of each, or "allowed"."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = libc.shmat.restype = ctypes.c_void_p
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    address = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    size, rx = ctypes.c_size_t(mmap.PAGESIZE), ctypes.c_int(mmap.PROT_READ | mmap.PROT_EXEC)
    segment = libc.shmget(IPC_PRIVATE, mmap.PAGESIZE, IPC_CREAT | 0o600)
    assert segment >= 0, os.strerror(ctypes.get_errno())

    def attempt(call: Callable[[], object]) -> str:
        try:
            failed = call() in (-1, ctypes.c_void_p(-1).value)
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
        return errno.errorcode[ctypes.get_errno()] if failed else "allowed"

    try:
        return {
            "mmap_wx": attempt(lambda: mmap.mmap(-1, mmap.PAGESIZE, prot=PROT_RWX)),
            "mprotect_x": attempt(lambda: libc.mprotect(address, size, rx)),
            "pkey_mprotect_x": attempt(
                lambda: libc.syscall(NR_PKEY_MPROTECT, address, size, rx, ctypes.c_int(-1))
            ),
            "shmat_exec": attempt(lambda: libc.shmat(segment, None, SHM_EXEC)),
            "sched_setaffinity": attempt(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
        }
    finally:
        libc.shmctl(segment, IPC_RMID, None)


def runtime_modules() -> list[str]:
    """Every top-level module and native extension of the packages in requirements/main.txt
    (test-only extensions excluded)."""
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", REQUIREMENTS.read_text(), re.MULTILINE)
    by_dist: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(_canonical(dist), set()).add(module)
    modules: list[str] = []
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in names:
        files = importlib.metadata.distribution(name).files or ()
        top = sorted(by_dist[_canonical(name)] - {"_yaml"})  # _yaml: a deprecated alias
        natives = [
            str(file).removesuffix(next(s for s in suffixes if str(file).endswith(s)))
            for file in files
            if str(file).endswith(suffixes) and "/tests/" not in str(file)
        ]
        modules += top + [path.replace("/", ".") for path in sorted(natives)]
    return modules


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_all() -> dict[str, Any]:
    """Import every runtime module (see :func:`runtime_modules`) and open a TLS context."""
    import sqlite3
    import ssl

    modules = runtime_modules()
    for module in modules:
        importlib.import_module(module)
    ssl.create_default_context()
    sqlite3.connect(":memory:").execute("select 1").close()
    return {"imported": modules}


def main(argv: list[str]) -> None:
    """``restrict MODE [--syscalls FILE] -- CMD…`` (apply, then exec CMD; FILE: a JSON list of
    allowed system call numbers), ``probe`` or ``import-all`` (a JSON line on stdout)."""
    if argv[:1] == ["restrict"] and "--" in argv:
        split = argv.index("--")
        mode, options, command = argv[1], argv[2:split], argv[split + 1 :]
        allowed = None
        if options[:1] == ["--syscalls"] and len(options) == 2:
            allowed = [int(nr) for nr in json.loads(Path(options[1]).read_text())]
        elif options:
            raise SystemExit(f"unknown options {options}")
        restrict(mode, allowed)
        os.execv(command[0], command)
    elif argv == ["probe"]:
        print(json.dumps(probe()))
    elif argv == ["import-all"]:
        print(json.dumps(import_all()))
    else:
        raise SystemExit(
            f"usage: {' '.join(LAUNCHER)} restrict MODE [--syscalls FILE] -- CMD… | probe"
            " | import-all"
        )


def restricted(mode: str, *command: str, syscalls: Path | None = None) -> list[str]:
    options = ["--syscalls", str(syscalls)] if syscalls is not None else []
    return [*LAUNCHER, "restrict", mode, *options, "--", *command]


def launch(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", {**os.environ})
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=GUARD, check=False, **kwargs
    )


# -- SystemCallFilter=: the unit's allow list as numbers ---------------------------------------

IMPLICIT_SYSCALLS = (
    *("execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"),
    *("clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep"),
)
"""Allowed whatever the filter says (systemd.exec(5), SystemCallFilter=)."""


def syscall_groups() -> dict[str, list[str]]:
    """Each ``@group`` systemd-analyze knows, with its members (names and ``@groups``)."""
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in systemd_analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif not line.startswith(" "):
            members = None
        elif members is not None and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def expand(item: str, groups: dict[str, list[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item}
    return set().union(*(expand(member, groups) for member in groups[item]))


@pytest.fixture(scope="module")
def unit_syscalls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit's SystemCallFilter= lines as a JSON list of this machine's system call numbers
    (names from systemd-analyze, numbers from libseccomp, which systemd itself links)."""
    groups = syscall_groups()
    filters = directives(UNIT.read_text())["SystemCallFilter"]
    assert not filters[0].startswith("~"), "the first SystemCallFilter= must be an allow list"
    names: set[str] = set()
    for value in filters:
        items = set().union(*(expand(item, groups) for item in value.lstrip("~").split()))
        names = names - items if value.startswith("~") else names | items
    names |= set(IMPLICIT_SYSCALLS)
    try:
        libseccomp = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.fail("libseccomp.so.2 is missing (Debian package libseccomp2, a systemd dependency)")
    resolve = libseccomp.seccomp_syscall_resolve_name
    resolve.argtypes, resolve.restype = [ctypes.c_char_p], ctypes.c_int
    numbers = [nr for nr in (resolve(name.encode()) for name in sorted(names)) if nr >= 0]
    assert resolve(b"sched_setaffinity") not in numbers  # in @resources: refused
    path = tmp_path_factory.mktemp("seccomp") / "allowed-syscalls.json"
    path.write_text(json.dumps(numbers))
    return path


# -- W^X and the system call filter: the tests -------------------------------------------------

WX_ATTEMPTS = ("mmap_wx", "mprotect_x", "pkey_mprotect_x", "shmat_exec")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("none", "allowed"),
        ("mdwe", "EACCES"),
        ("seccomp", "EPERM"),
    ],
)
def test_wx_rule_takes_effect_across_exec(mode: str, expected: str) -> None:
    """Each W^X rule, applied by the launcher and carried across ``exec``, refuses all four ways
    to writable-and-executable memory (and without a rule all four succeed: the rule refuses)."""
    result = launch(restricted(mode, *LAUNCHER, "probe"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        **dict.fromkeys(WX_ATTEMPTS, expected),
        "sched_setaffinity": "allowed",
    }


def test_syscall_filter_takes_effect(unit_syscalls: Path) -> None:
    """The unit's SystemCallFilter=, applied by the launcher, refuses sched_setaffinity (in
    @resources) and pkey_mprotect (in no group it allows) with EPERM, and leaves the other
    memory calls to the W^X rule."""
    result = launch(restricted("none", *LAUNCHER, "probe", syscalls=unit_syscalls))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        **dict.fromkeys(WX_ATTEMPTS, "allowed"),
        "pkey_mprotect_x": "EPERM",
        "sched_setaffinity": "EPERM",
    }


def test_runtime_dependencies_load_in_the_sandbox(unit_syscalls: Path) -> None:
    """Under both W^X rules and the unit's system call filter every runtime dependency imports,
    native extensions included."""
    result = launch(restricted("both", *LAUNCHER, "import-all", syscalls=unit_syscalls))
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)["imported"]
    assert {"pydantic_core._pydantic_core", "yaml._yaml"} <= set(imported)
    assert len(imported) >= 40


def test_rotation_in_the_sandbox(
    stack: Stack, state_url: str, tmp_path: Path, unit_syscalls: Path
) -> None:
    """Under both W^X rules and the unit's system call filter ``rotator rotate`` promotes a new
    key everywhere (stand-in, OpenBao, moto), and the new key is what consumers read."""
    spec = stack.add_target(("vault", "aws"))
    old_key_id = stack.seed(spec)
    config = stack.write_config(tmp_path / "rotator.yaml", state_url=state_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    rotate = [ROTATOR, "--log-level", "WARNING", "-c", str(config), "rotate", "--all", "--json"]
    command = restricted("both", *rotate, syscalls=unit_syscalls)
    result = launch(command, env={**env, **stack.aws_env()})
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["target"], row["outcome"]) == (spec.name, "promoted")
    assert row["new_key_id"] != old_key_id
    for where, data in stack.consumer_reads(spec):
        assert data is not None, where
        assert stack.key_works(data["api_key"]), where


# -- the daemon under the unit's environment ----------------------------------------------------


T = TypeVar("T")


class Daemon:
    """``rotator run`` started as the unit starts it, and systemd's end of ``NOTIFY_SOCKET`` (a
    bound AF_UNIX datagram socket); every wait gives up after :data:`GUARD` or if it exits."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, notify: Path) -> None:
        self.log = log
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(notify))
        self.socket.settimeout(0.2)
        env = {**env, "NOTIFY_SOCKET": str(notify)}
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
            )

    def notification(self, key: str) -> dict[str, str]:
        """The next datagram carrying ``key``, as a dict of its ``KEY=VALUE`` lines."""
        return self._until(lambda: self._datagram(key), f"a datagram with {key}")

    def event(self, name: str) -> dict[str, Any]:
        """The first log event called ``name``."""
        from tests.support.jsonlog import read_events

        return self._until(
            lambda: next((e for e in read_events(self.log) if e.get("event") == name), None), name
        )

    def _datagram(self, key: str) -> dict[str, str] | None:
        try:
            data = self.socket.recv(4096).decode()
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.splitlines())
        return message if key in message else None

    def _until(self, found: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            value = found()
            if value is not None:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"rotator run exited {self.proc.returncode}: {self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"never happened: {what}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.socket.close()


def systemd_environment(tmp_path: Path, stack: Stack) -> dict[str, str]:
    """What the unit gives rotator (but NOTIFY_SOCKET): watchdog, credentials, directories."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    aws = stack.moto.rotator
    secrets = {
        "mistral-admin-key": stack.standin.admin_key,
        "vault-token": stack.openbao.rotator_token,
        "admin-token": "daemon-api-token",
        "aws-credentials": (
            f"[default]\naws_access_key_id = {aws.access_key_id}\n"
            f"aws_secret_access_key = {aws.secret_access_key}\n"
        ),
        "webhook-url": "\n",  # left to its SetCredential= fallback (the config names none)
    }
    for name, value in secrets.items():
        (creds / name).write_text(value + ("" if value.endswith("\n") else "\n"))
        (creds / name).chmod(0o400)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "WATCHDOG_USEC": "1000000",
        "CREDENTIALS_DIRECTORY": str(creds),
        "STATE_DIRECTORY": str(state),
        "CONFIGURATION_DIRECTORY": str(tmp_path),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds / "aws-credentials"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def systemd_config(stack: Stack, path: Path) -> Path:
    """The stack's configuration with every secret read from ``$CREDENTIALS_DIRECTORY`` and the
    state in ``$STATE_DIRECTORY``, one target due two seconds after the daemon first sees it."""
    data = stack.config_dict(
        state_url="sqlite:///${STATE_DIRECTORY}/state.db",
        policy={"schedule": "every 2s", "grace": "1h", "jitter": "0s"},
    )
    del data["mistral"]["admin_key"]
    data["mistral"]["admin_key_file"] = "${CREDENTIALS_DIRECTORY}/mistral-admin-key"
    vault_auth = data["stores"]["vault"]["auth"]
    del vault_auth["token"]
    vault_auth["token_file"] = "${CREDENTIALS_DIRECTORY}/vault-token"
    data["server"] = {
        "listen": "127.0.0.1:0",
        "admin_token_file": "${CREDENTIALS_DIRECTORY}/admin-token",
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_daemon_under_the_unit_contract(stack: Stack, tmp_path: Path, unit_syscalls: Path) -> None:
    """``rotator run`` as the unit starts it (W^X, system call filter, credentials, state
    directory, notify socket, watchdog): READY=1, WATCHDOG=1 pings, a scheduled rotation,
    /readyz and an authenticated API call answered, then on SIGTERM STOPPING=1 and exit 0."""
    import httpx

    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    config = systemd_config(stack, tmp_path / "rotator.yaml")
    env = systemd_environment(tmp_path, stack)
    run = [ROTATOR, "--log-format", "json", "run", "--config", str(config)]
    command = restricted("both", *run, syscalls=unit_syscalls)
    daemon = Daemon(command, env, tmp_path / "daemon.log", tmp_path / "notify")
    try:
        ready = daemon.notification("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"]
        for _ in range(2):
            assert daemon.notification("WATCHDOG") == {"WATCHDOG": "1"}
        url = f"http://127.0.0.1:{daemon.event('daemon_started')['port']}"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        auth = {"Authorization": "Bearer daemon-api-token"}
        assert httpx.get(f"{url}/api/v1/targets", headers=auth, timeout=10).status_code == 200
        rotated = daemon.event("rotation_result")
        assert (rotated["target"], rotated["outcome"]) == (spec.name, "promoted")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.notification("STOPPING")["STOPPING"] == "1"
        assert daemon.proc.wait(timeout=GUARD) == 0, daemon.text()
    finally:
        daemon.close()
    assert (Path(env["STATE_DIRECTORY"]) / "state.db").is_file()
    for secret in (stack.standin.admin_key, stack.openbao.rotator_token, "daemon-api-token"):
        assert secret not in daemon.text()


if __name__ == "__main__":
    main(sys.argv[1:])
