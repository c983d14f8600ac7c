#!/usr/bin/env bash
# The test command: installs missing system packages, then runs the whole suite (release build:
# the numeric tests run on the optimized kernels they check).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
swift test -c release --disable-swift-testing "$@"
