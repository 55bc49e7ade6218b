#!/usr/bin/env bash
# Builds the release preset and runs the benchmarks side by side with nginx.
# Needs wrk and nginx-light (scripts/setup.sh bench installs them).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" --target bench_reload http_server
exec build/release/bench/bench_reload "$@"
