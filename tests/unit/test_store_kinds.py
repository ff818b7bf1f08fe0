"""A store kind is its package plus one line in rotator/destinations/registry.py.

The lasting check of docs/adding-a-destination.md: in a fresh interpreter, a third kind
(:mod:`tests.support.memory_kind`, one module) is added to the registry's ``KINDS`` before the
configuration is first imported, as the line a new kind adds would. Nothing else is changed, and
the configuration takes its stores and destinations (with the usual one-line errors naming the
field, exit status 2), ``rotator check --config-only`` counts it, the registry builds it with the
metrics hook, and the configuration reference's test names exactly its keys as undocumented (the
rows a new kind adds to docs/configuration.md).

In this interpreter: the kinds of the registry are coherent, and no module outside a kind's
package names its ``type:``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from rotator.destinations.kind import DestinationSettings, StoreSettings
from rotator.destinations.registry import KINDS

ROOT = Path(__file__).resolve().parents[2]

MISTRAL = """
mistral:
  admin_key: test-admin-key
  user_id: 9c0ab39f-0cd0-46cd-bd30-8bf2d50be5ce
"""
GOOD = (
    MISTRAL
    + """
stores:
  vault-main: {type: vault, url: "http://127.0.0.1:1", auth: {method: token, token: t}}
  mem: {type: memory, pending: false}
targets:
  - name: prod-backend
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations:
      - {store: vault-main, path: mistral/prod-backend, field: api_key}
      - {store: mem, path: mistral/prod-backend, field: api_key}
"""
)
BAD = {
    "field": "stores: {mem: {type: memory, pending: maybe}}",
    "type": "stores: {mem: {type: gcp}}",
    "foreign": """
stores: {mem: {type: memory}}
targets:
  - name: a
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations: [{store: mem, path: p, secret_id: s}]
""",
    "same": """
stores: {mem: {type: memory}}
targets:
  - name: a
    workspace_id: 019b2bd7-96e7-7219-8c0b-45a73da50088
    destinations: [{store: mem, path: p}, {store: mem, path: p, field: f}]
""",
}

SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path

from rotator.destinations import registry
from tests.support.memory_kind import KIND

assert "rotator.config" not in sys.modules, "the configuration must read the registry after this"
registry.KINDS = (*registry.KINDS, KIND)  # the line a new kind adds to KINDS

from rotator.clock import SystemClock
from rotator.config import load_config
from rotator.destinations.registry import StoreConnections, build_destination
from rotator.pool import BlockingPool
from tests.unit.test_cli_errors import run_cli
from tests.unit.test_docs_config_reference import DOC, problems



found = {"check": {}}
for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
    found["check"][path.stem] = run_cli("check", "--config-only", "--config", str(path))

cfg = load_config(sys.argv[1] + "/good.yaml")
calls = []
built = []
with BlockingPool(max_workers=1) as pool:
    connections = StoreConnections()
    for dest in cfg.targets[0].destinations:
        made = build_destination(
            cfg.store_of(dest),
            dest,
            pool=pool,
            clock=SystemClock(),
            connections=connections,
            on_call=lambda *call: calls.append(call[:3]),
        )
        built.append([type(dest).__name__, type(made).__name__, made.name])
    current = asyncio.run(made.read_current())
found["built"] = built
found["calls"] = calls
found["memory_is_empty"] = not current.exists
found["undocumented"] = problems(type(cfg), DOC.read_text(encoding="utf-8"))
print(json.dumps(found))
"""


def test_a_kind_added_to_the_registry_is_configured_checked_and_built(tmp_path: Path) -> None:
    """One module and one line in KINDS: the whole of what a third kind needs in the code."""
    (tmp_path / "good.yaml").write_text(GOOD)
    for name, body in BAD.items():
        (tmp_path / f"{name}.yaml").write_text(MISTRAL + body)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    check = {name: (code, out, err.strip()) for name, (code, out, err) in found["check"].items()}

    code, out, _ = check.pop("good")
    assert (code, "1 target, 2 stores" in out) == (0, True), out
    where = {name: f"{tmp_path}/{name}.yaml: " for name in BAD}
    assert check == {
        "field": (2, "", where["field"] + "stores.mem.pending: must be true or false"),
        "type": (
            2,
            "",
            where["type"] + "stores.mem.type: must be vault, aws_secrets_manager or memory",
        ),
        "foreign": (
            2,
            "",
            where["foreign"] + "targets[0].destinations[0].secret_id: store 'mem' is a memory"
            " store; secret_id is for AWS Secrets Manager destinations (a memory destination"
            " takes path and field)",
        ),
        "same": (
            2,
            "",
            where["same"] + "targets[0].destinations[1]: same destination as"
            " targets[0].destinations[0] (store 'mem', path 'p'); one path holds one key",
        ),
    }
    assert found["built"] == [
        ["VaultDestination", "VaultDestination", "vault-main:secret/mistral/prod-backend#api_key"],
        ["MemoryDestinationSettings", "MemoryDestination", "mem:mistral/prod-backend#api_key"],
    ]
    assert found["calls"] == [["memory", "connect", "ok"]]  # building Vault calls nothing
    assert found["memory_is_empty"]
    assert found["undocumented"] == [
        "undocumented: stores.<name>(memory).pending",
        "undocumented: stores.<name>(memory).type",
        "undocumented: targets[].destinations[](memory).field",
        "undocumented: targets[].destinations[](memory).path",
        "undocumented: targets[].destinations[](memory).store",
    ]


def test_each_kind_in_the_registry_is_coherent() -> None:
    """Types are unique; each kind's store schema has ``type: Literal[<its type>]`` and its
    destination schema says what place it holds; messages have its words."""
    assert len({kind.type for kind in KINDS}) == len(KINDS)
    for kind in KINDS:
        annotation = kind.store.model_fields["type"].annotation
        assert (get_origin(annotation), get_args(annotation)) == (Literal, (kind.type,))
        assert issubclass(kind.store, StoreSettings)
        assert issubclass(kind.destination, DestinationSettings)
        assert kind.destination.place is not DestinationSettings.place, kind.type
        assert all((kind.a_store, kind.destinations, kind.a_destination)), kind.type


def test_no_module_outside_a_kind_names_its_type() -> None:
    """The registry lists the kinds; their ``type:`` string stands nowhere else in rotator/
    (outside the kind's own package), so the configuration names none."""
    found = []
    for path in sorted((ROOT / "rotator").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            for kind in KINDS:
                package = kind.build.__module__  # rotator.destinations.<its package>
                if node.value == kind.type and not module.startswith(package):
                    found.append(f"{module}:{node.lineno}: {kind.type!r}")
    assert found == []
