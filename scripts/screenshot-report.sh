#!/usr/bin/env bash
# Screenshot of a `longtune report` page with headless Chromium (Debian: apt-get install chromium),
# to check what a browser shows.
#   scripts/screenshot-report.sh RUN/report.html [OUT.png] [WIDTHxHEIGHT]
set -euo pipefail
page=${1:?usage: scripts/screenshot-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${page%.html}.png}
size=${3:-1400x2600}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium found: apt-get install chromium" >&2; exit 1; }
# --no-sandbox: Chromium refuses to run as root with its sandbox on.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${size/x/,}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" 2>/dev/null
echo "screenshot -> $out"
