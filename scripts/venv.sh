#!/usr/bin/env bash
# Creates or refreshes .venv from the hashed requirements; sourced by the other scripts.
# Re-installs only when requirements/dev.txt or pyproject.toml changed.
#
# Bytecode is compiled ahead of time: where bytecode cannot be written at import (a read-only
# tree, or PYTHONDONTWRITEBYTECODE=1, which many shells and CI set) every start would compile
# every module it imports again (`rotator --version` took 0.99 s instead of 0.38 s that way).
# pip installs with --no-compile and compileall then compiles site-packages on every core, once
# per install (the .compiled stamp); rotator/ and rotator_dev/ (the checkout, installed
# editable) are compiled at every run, which redoes only the files changed since (~0.05 s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# The [tool.*] tables (lint and test settings) do not change what is installed.
stamp_want="$({ cat "$root/requirements/dev.txt"; sed '/^\[tool\./,$d' "$root/pyproject.toml"; } \
  | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp_want" ]; then
  echo "==> installing dependencies into .venv (hashed requirements)" >&2
  log="$(mktemp)"
  if ! { python3 -m venv "$venv" &&
         "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
           --require-hashes -r "$root/requirements/dev.txt" &&
         "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
           --no-build-isolation -e "$root"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2 || true
    echo "dependency installation failed" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$stamp_want" > "$venv/.stamp"
fi
if [ "$(cat "$venv/.compiled" 2>/dev/null)" != "$stamp_want" ]; then
  echo "==> compiling the dependencies' bytecode" >&2
  # A file that does not compile (say, a template shipped as .py) is reported, not fatal.
  "$venv/bin/python" -m compileall -q -j0 "$venv"/lib/python3*/site-packages >&2 ||
    echo "(some files did not compile; they are compiled at import instead)" >&2
  echo "$stamp_want" > "$venv/.compiled"
fi
"$venv/bin/python" -m compileall -q "$root/rotator" "$root/rotator_dev" >&2 ||
  echo "(rotator's own sources did not all compile)" >&2
# The dev kit (rotator_dev/: the Mistral stand-in, the demo, the in-memory destination) is not
# part of the rotator distribution, so the editable install maps rotator/ alone; a link in
# site-packages makes it importable by .venv's python from any directory (`rotator dev standin`,
# scripts/demo, the tests' subprocesses). Checked on every run: a venv made before it gets it too.
for site in "$venv"/lib/python3*/site-packages; do
  [ "$(readlink "$site/rotator_dev")" = "$root/rotator_dev" ] ||
    ln -sfn "$root/rotator_dev" "$site/rotator_dev"
done
export PATH="$venv/bin:$PATH"
