#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it (lint, types, tests).
#
#   bash scripts/test.sh            # what CI runs (.ci/run calls this)
#   bash scripts/test.sh -k sim     # extra arguments go to pytest
#
# torch is installed first and pinned: any unpinned torch lets pip pick other multi-GB builds, and
# open_clip needs torchvision, which only imports beside this torch build (see README, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# System packages for the hardware-in-the-loop tests (real sshd servers on loopback, load injection) and
# the report test (headless Chromium).  Only as root with apt; otherwise those tests skip with a reason.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in openssh-server stress-ng chromium fonts-dejavu-core; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  install -d -m0755 /run/sshd
fi

$PY -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
$PY -m pip install -q --disable-pip-version-check -e '.[all]'

$PY -m ruff format --check edgeprune sim traces models hil bench tests
$PY -m ruff check edgeprune sim traces models hil bench tests
$PY -m mypy edgeprune sim traces models hil
# Two passes, to keep CI under its 20-minute budget on a 2-core machine: the tests that need no local SSH
# cluster on both cores (pytest-xdist, one file per worker so a module's fixture is built once), then the
# cluster tests alone and in order (their nodes' speed is this machine's CPU under a quota: they time real
# services and must not share the cores).  Each pass lists its slowest tests; "no test selected" (exit 5,
# e.g. a -k that matches only the other pass) is not a failure.
pytest_pass() {
  local rc=0
  $PY -m pytest -q "$@" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || exit "$rc"
}
pytest_pass -n 2 --dist loadfile -m "not ssh" --durations=10 "$@"
pytest_pass -m ssh --durations=15 "$@"
