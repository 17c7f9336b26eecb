#!/usr/bin/env bash
# Render a `lessdb report` HTML page in a real headless browser (Debian's chromium) and save a PNG screenshot,
# to check that the self-contained page opens offline and shows its plots.
#
# Usage:   bench/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
# Example: lessdb report bbh-less --output report.html && bench/screenshot_report.sh report.html report.png
# Needs:   apt-get install -y chromium   (not needed by the test suite; tests/test_report.py runs this script
#          only when chromium is installed)
#
# The browser runs sandbox-less and with every background/network feature off, in a throw-away profile; the page
# itself needs no network (plots are embedded as base64 PNG).
set -euo pipefail
report=${1:?usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${report%.html}.png}
size=${3:-1200x2000}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: apt-get install -y chromium" >&2
  exit 2
fi
[ -f "$report" ] || { echo "no such file: $report" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
rm -f "$out_abs"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --disable-background-networking --disable-component-update --disable-sync --no-first-run \
  --disable-extensions --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${size/x/,}" --screenshot="$out_abs" "file://$abs" >/dev/null 2>&1 || true
if [ ! -s "$out_abs" ]; then
  echo "chromium wrote no screenshot for $report" >&2
  exit 1
fi
echo "$out_abs"
