#!/usr/bin/env bash
# Set up (first run only: a venv with the serve dependencies, no torch) and start the local API and
# web page serving every bundled model (models/*/ with a model.json; models/flying-objects is the
# default one). Extra arguments go to `skyclass serve` (e.g. --port 9000); any --model/-m, or
# SKYCLASS_MODELS, replaces the bundled list.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.skyclass-serve-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "installing skyclass (serve dependencies only) into .venv ..."
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
  touch "$stamp"
fi
models=()
if [ -z "${SKYCLASS_MODELS:-}" ] && ! printf '%s\n' "$@" | grep -qE '^(-m|--model)(=|$)'; then
  [ -f models/flying-objects/model.json ] && models+=(--model models/flying-objects)
  for dir in models/*/; do
    dir=${dir%/}
    if [ "$dir" != models/flying-objects ] && [ -f "$dir/model.json" ]; then
      models+=(--model "$dir")
    fi
  done
fi
exec .venv/bin/skyclass serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  ${models[@]+"${models[@]}"} "$@"
