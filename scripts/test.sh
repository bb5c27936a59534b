#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine (Python deps from the constraints file,
# Debian's chromium for the browser test, npm packages for the deploy tests), then lint, type-check
# and run the tests. With CI=true (as .ci/run sets it) every test runs, slow and browser ones too;
# otherwise pytest's defaults leave those out (pyproject.toml). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v wrk >/dev/null || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.skyclass-test-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "installing skyclass[train,dev,s3,tensorboard,mlflow,wandb] into .venv ..."
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
    -e '.[train,dev,s3,tensorboard,mlflow,wandb]'
  touch "$stamp" .venv/.skyclass-serve-installed
fi

if [ -f deploy/package-lock.json ] && [ ! -d deploy/node_modules ]; then
  echo "installing npm packages for deploy/ ..."
  (cd deploy && npm ci --no-audit --no-fund --loglevel=error)
fi

export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
mypy
if [ "${CI:-}" = "true" ]; then
  exec pytest -m "" "$@"
fi
exec pytest "$@"
