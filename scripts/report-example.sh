#!/usr/bin/env bash
# Regenerate docs/report-example.png: the opening of the report of the paper's Fig. 5 sweep, as a browser shows it.
#
#   bash scripts/report-example.sh [WORKDIR]      # WORKDIR default runs/report-example (sweep ~2 min on 2 cores)
#
# Needs chromium (scripts/test.sh installs it).  The sweep is resumable: a rerun only rebuilds the report.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/report-example}
PY=${PYTHON:-python3}
$PY -m edgeprune.cli.sim sweep scenarios/paper/sweep.toml --out "$work/fig5"
$PY -m edgeprune.cli.sim scenarios/paper/slowdown.toml --out "$work/slowdown" --no-progress --force
$PY -m edgeprune.cli.report "$work/fig5" "$work/slowdown" \
  --profile models/profiles/vit-b16_x86-2c_digits-proxy.json -o "$work/site/report.html"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$profile" \
  --virtual-time-budget=30000 --hide-scrollbars --window-size=1100,1500 \
  --screenshot="$PWD/docs/report-example.png" "file://$(realpath "$work/site/report.html")"
echo "docs/report-example.png written from $work/site/report.html"
