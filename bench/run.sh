#!/usr/bin/env bash
# procmodel's benchmarks in one command: builds the release preset (http_server
# and the bench programs), runs every scenario of bench/suite.py side by side
# with nginx and HAProxy, and writes docs/benchmarks.md and its plots
# (docs/benchmarks-*.png, .svg). Under 15 minutes on 2 cores; --quick is a
# smoke run of about 3. Needs wrk, nginx-light, haproxy, gnuplot-nox and time
# (scripts/setup.sh bench installs them, then runs this).
#
#   bench/run.sh [--quick] [--only 1,3,...] [--out PATH]
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" --target http_server bench_bare_http bench_bare_http_inlined bench_big_master
python3 bench/suite.py --build build/release "$@"
echo "bench/run.sh: $(( $(date +%s) - start )) s in all, build included" >&2
