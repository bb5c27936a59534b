#!/usr/bin/env bash
# The benchmark command: skyclass side by side with a seed-style PyTorch Lambda handler.
# Needs the test environment (scripts/test.sh sets it up: .venv with [train,dev], wrk) and
# ../shared beside the clone. Arguments go to `python -m benchmarks.run` (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing wrk (Debian) for the HTTP rows"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
exec .venv/bin/python -m benchmarks.run "$@"
