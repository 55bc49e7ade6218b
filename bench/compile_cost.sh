#!/usr/bin/env bash
# What a server's main file costs to compile: the README's quick start,
# header-only and separately compiled (PROCMODEL_SEPARATE_COMPILATION), beside
# a bare Boost.Asio program doing the same job (bench/compile/bare_asio.cpp).
# Same compiler and flags for all three, interleaved over ROUNDS rounds; the
# median CPU time (user + system: a busy second core changes it little) and
# peak memory of each, as ratios to the bare program. A fourth row is the
# header-only file's front end alone (-fsyntax-only).
#
#   bench/compile_cost.sh [ROUNDS]     (default 5; CXX and CXXFLAGS are honoured)
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
rounds=${1:-5}
cxx=${CXX:-g++}
flags=(-std=c++20 -O2 ${CXXFLAGS:-})
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package: time)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
# The quick start exactly as the README shows it: its first ```cpp block.
awk '/^```cpp$/ && !seen {inside=1; seen=1; next} inside && /^```$/ {exit} inside' README.md \
  > "$work/quickstart.cpp"
[[ -s $work/quickstart.cpp ]] || { echo "no quick start in README.md" >&2; exit 1; }

declare -A cmd
cmd[bare_asio]="$cxx ${flags[*]} -c bench/compile/bare_asio.cpp -o $work/bare.o"
cmd[header_only]="$cxx ${flags[*]} -Iinclude -c $work/quickstart.cpp -o $work/ho.o"
cmd[separate]="$cxx ${flags[*]} -Iinclude -DPROCMODEL_SEPARATE_COMPILATION -c $work/quickstart.cpp -o $work/sep.o"
# The header-only file's front end alone (parsing and template instantiation,
# no code generated): the floor no change to the master's code can go below.
cmd[header_only_syntax]="$cxx ${flags[*]} -Iinclude -fsyntax-only $work/quickstart.cpp"
names=(bare_asio header_only separate header_only_syntax)

for ((r = 1; r <= rounds; r++)); do
  for n in "${names[@]}"; do
    /usr/bin/time -f "$n %U %S %M" -a -o "$work/times" ${cmd[$n]}
  done
done

python3 - "$work/times" "$cxx" "${flags[*]}" "$rounds" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    n, u, s, m = line.split()
    rows.setdefault(n, []).append((float(u) + float(s), int(m) / 1024))
med = {n: (statistics.median(c for c, _ in v), statistics.median(m for _, m in v)) for n, v in rows.items()}
b_cpu, b_mem = med["bare_asio"]
print(f"compiler: {sys.argv[2]} {sys.argv[3]}; median of {sys.argv[4]} interleaved rounds\n")
print("| main file | CPU s | peak MB | CPU vs bare | memory vs bare |")
print("|---|---:|---:|---:|---:|")
for n in ("bare_asio", "header_only", "separate", "header_only_syntax"):
    cpu, mem = med[n]
    print(f"| {n} | {cpu:.2f} | {mem:.0f} | {cpu / b_cpu:.2f}x | {mem / b_mem:.2f}x |")
PY
