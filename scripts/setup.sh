#!/usr/bin/env bash
# Set up procmodel on Debian/Ubuntu and run it.
#
#   scripts/setup.sh demo    install what is missing, build (release), run the http example
#   scripts/setup.sh test    install what is missing, then the whole suite four ways:
#                            ci preset (warnings as errors), asan (ASan+UBSan, every test
#                            but the packaging ones), tsan (the unit tests that run
#                            workers as threads, and exec_spawner's), fuzz (each
#                            parser's libFuzzer target, bounded); a sanitizer report
#                            from any process fails the run
#   scripts/setup.sh bench   install what is missing (plus wrk, nginx-light, haproxy,
#                            gnuplot-nox, time, python3), run bench/run.sh
#
# Non-interactive: fine under CI=true with no stdin. Set PROCMODEL_SKIP_APT=1 to
# skip the package step (the tools and libraries must then already be there).
set -euo pipefail

usage() {
  echo "usage: $0 demo|test|bench" >&2
  exit 2
}

log() { echo "setup: $*" >&2; }

[[ $# -eq 1 ]] || usage
mode=$1
case "$mode" in
  demo | test | bench) ;;
  *) usage ;;
esac

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

if [[ $mode == bench && ! -f bench/run.sh ]]; then
  log "bench/run.sh is not there yet"
  exit 2
fi

# --- (a) Debian packages ------------------------------------------------------

packages=(g++ cmake make libboost-dev libfmt-dev catch2)
if [[ $mode == test ]]; then
  packages+=(clang libclang-rt-14-dev)  # libFuzzer for the fuzz targets
  packages+=(strace)                    # the start-order test traces the master
  packages+=(pkg-config)                # the consumer_pkg_config test
fi
if [[ $mode == test || $mode == demo ]]; then
  packages+=(python3)                   # examples/06-exec's worker is a Python program
fi
if [[ $mode == bench ]]; then
  packages+=(wrk nginx-light haproxy gnuplot-nox time python3)
fi

install_missing() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "no dpkg-query (not Debian?): make sure these are installed: ${packages[*]}"
    return
  fi
  local missing=() p status
  for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return
  fi

  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "missing packages: ${missing[*]}; run as root or install sudo"
      exit 1
    fi
    sudo=(sudo)
    # Without a terminal nobody can type a password: fail instead of waiting.
    [[ -t 0 ]] || sudo+=(-n)
  fi
  log "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

if [[ ${PROCMODEL_SKIP_APT:-0} != 1 ]]; then
  install_missing
fi

# --- (b) configure and build, (c)/(d) run -------------------------------------

jobs=$(nproc 2>/dev/null || echo 2)

case "$mode" in
  test)
    cmake --preset ci
    cmake --build --preset ci -j"$jobs"
    # A test that fails is run once more (integration tests time real
    # processes on 2 shared cores); one that fails twice fails the run, and
    # every retry is listed at the end.
    retry=(--repeat until-pass:2)
    ctest --preset ci "${retry[@]}" | tee build/ci-test.log  # pipefail: its status stands

    # Sanitized runs: every process (master, workers, daemons whose stderr is
    # /dev/null) writes its report to a file here instead of a stream a test
    # may not read; any file at all fails the run.
    reports="$root/build/sanitizer-reports"
    rm -rf -- "$reports"
    mkdir -p -- "$reports"
    export PROCMODEL_SANITIZER_LOG="log_path=$reports/report"
    check_reports() {
      local found
      found=$(find "$reports" -type f | sort)
      [[ -z $found ]] && return 0
      log "sanitizer reports after the $1 run:"
      local f
      for f in $found; do
        echo "===== $f" >&2
        head -n 60 -- "$f" >&2
      done
      return 1
    }

    log "ASan+UBSan: the whole suite but the packaging and compile-only tests"
    cmake --preset asan
    cmake --build --preset asan -j"$jobs"
    asan_rc=0
    ctest --preset asan -LE "docs|consumer|compile" "${retry[@]}" | tee build/asan-test.log || asan_rc=$?
    check_reports asan || asan_rc=1

    log "TSan: the unit tests that run workers as threads (inline_spawner), and exec_spawner's"
    mapfile -t threaded < <(grep -l -E 'inline_spawner|^#include <procmodel/exec_spawner.hpp>' tests/unit/*.cpp |
      xargs -n1 basename | sed 's/\.cpp$//')
    cmake --preset tsan
    tsan_rc=0
    if [[ ${#threaded[@]} -gt 0 ]]; then
      targets=() regex=()
      for t in "${threaded[@]}"; do
        targets+=(--target "unit_$t")
        regex+=("^unit_$t:")
      done
      cmake --build --preset tsan -j"$jobs" "${targets[@]}"
      ctest --preset tsan -R "$(IFS='|'; echo "${regex[*]}")" || tsan_rc=$?
      check_reports tsan || tsan_rc=1
    fi

    log "fuzz: each parser's libFuzzer target, a fixed seed and number of inputs"
    cmake --preset fuzz
    cmake --build --preset fuzz -j"$jobs"
    fuzz_rc=0
    ctest --preset fuzz || fuzz_rc=$?

    # ctest prints a test's failed attempts before the one that passed.
    flaky=$(grep -h -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Timeout|Exception)' \
      build/ci-test.log build/asan-test.log | sed 's/^ *[0-9]*\/[0-9]* //' || true)
    if [[ -n $flaky ]]; then
      log "failed at least once, each run again once (a pass the second time is a flaky test: look at it):"
      echo "$flaky" >&2
    fi
    log "asan: rc $asan_rc, tsan: rc $tsan_rc, fuzz: rc $fuzz_rc"
    [[ $asan_rc -eq 0 && $tsan_rc -eq 0 && $fuzz_rc -eq 0 ]]
    ;;

  demo)
    cmake --preset release
    cmake --build --preset release -j"$jobs" --target http_server
    server="$root/build/release/examples/http/http_server"
    pid_file=/tmp/procmodel-demo.pid
    config=/tmp/procmodel-demo.conf
    [[ -f $config ]] || echo "greeting = hello" >"$config"
    cat >&2 <<HINT

procmodel demo: master + 2 workers on http://127.0.0.1:8080/
try, from another terminal:
  curl http://127.0.0.1:8080/
  $server -s status --pid-file $pid_file
  sed -i 's/= .*/= howdy/' $config && $server -s reload --pid-file $pid_file && curl http://127.0.0.1:8080/
  $server -s upgrade --pid-file $pid_file      # hot upgrade of the binary
  kill -9 <a worker pid>                        # respawned at once
Ctrl-C or '$server -s quit --pid-file $pid_file' to stop.

HINT
    exec "$server" --workers 2 --listen 127.0.0.1:8080 --pid-file "$pid_file" --config "$config"
    ;;

  bench)
    exec bash bench/run.sh
    ;;
esac
