#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs lint, types,
# the quick benchmark run and every test. Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

# The Node compute-module client, pinned by tests/node/package-lock.json.
if [ -f tests/node/package-lock.json ]; then
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi

# Debian's chromium for the browser tests (the tests fail, never skip, without it).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "tests/run.sh: chromium is missing; install Debian's chromium package" >&2
        exit 1
    fi
fi

echo "== ruff"
"$VENV/bin/ruff" check emulator tests benchmarks
"$VENV/bin/ruff" format --check emulator tests benchmarks
echo "== mypy --strict"
"$VENV/bin/mypy"
echo "== benchmarks --quick (correctness only)"
"$VENV/bin/python" benchmarks/run.py --quick
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
