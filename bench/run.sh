#!/usr/bin/env bash
# Builds the release preset and runs the benchmarks side by side with nginx:
# reloads under load (bench_reload), then hot upgrades under load (bench_upgrade).
# Needs wrk and nginx-light (scripts/setup.sh bench installs them).
# Arguments are passed to both (--duration S, --workers N).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" --target bench_reload bench_upgrade http_server
build/release/bench/bench_reload "$@"
build/release/bench/bench_upgrade "$@"
