#!/usr/bin/env python3
"""procmodel's http_server against the same handler without procmodel
(bench_bare_http), once as bench/run.sh builds them and once both built with
GCC's profile-guided optimization, each trained on the same load. The
optimizer then places each program's hot code by its profile, so where GCC
and the linker happen to put the worker's hot functions no longer differs
between the two programs; what is left is what procmodel adds to a request.
bench/analysis.md ("procmodel against the same handler without it") cites it.

Needs the release build (cmake --preset release; the targets http_server and
bench_bare_http), wrk and 2 CPUs. Builds build/pgo itself (about 2 minutes on
2 cores), then runs the servers pinned to one CPU and wrk to the other, every
server once per round in an order of its own, and prints each pair's
round-by-round ratio (median and quartiles).

    python3 bench/probes/pgo_pair.py [--rounds 16]
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import suite  # noqa: E402

TARGETS = ["http_server", "bench_bare_http"]


def build(build_dir, flags):
    subprocess.run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                    "-DPROCMODEL_BUILD_TESTS=OFF", "-DPROCMODEL_INSTALL=OFF",
                    f"-DCMAKE_CXX_FLAGS={flags}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build_dir, f"-j{os.cpu_count()}", "--target", *TARGETS],
                   check=True, stdout=subprocess.DEVNULL)
    return {"http_server": os.path.join(build_dir, "examples/http/http_server"),
            "bench_bare_http": os.path.join(build_dir, "bench/bench_bare_http")}


def pgo_builds(build_dir, seconds):
    """Both programs built with -fprofile-use, from a profile of `seconds` of load.

    The profile is read back by object path, so both steps build in one
    directory. A forked worker writes its counters as it ends
    (detail::write_profile_counters): without that, http_server's profile
    would hold only its master.
    """
    profile = os.path.join(build_dir, "profile")
    shutil.rmtree(profile, ignore_errors=True)
    gen = build(build_dir, f"-fprofile-generate={profile} -fprofile-update=atomic")
    for make in (lambda: suite.procmodel(1, program=gen["http_server"]),
                 lambda: suite.bare(1, program=gen["bench_bare_http"])):
        with make() as srv:
            time.sleep(0.3)
            suite.wrk(srv.port, seconds, threads=1)
    used = build(build_dir, f"-fprofile-use={profile} -Wno-missing-profile")
    kept = {}
    for name, path in used.items():
        kept[name] = os.path.join(build_dir, name + ".pgo")
        shutil.copy2(path, kept[name])
    return kept


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--seconds", type=int, default=3, help="wrk's run per server and round")
    p.add_argument("--train", type=int, default=5, help="seconds of load for the profile")
    a = p.parse_args()
    release = os.path.join(ROOT, "build/release")
    default = {"http_server": os.path.join(release, "examples/http/http_server"),
               "bench_bare_http": os.path.join(release, "bench/bench_bare_http")}
    for path in default.values():
        if not os.access(path, os.X_OK):
            sys.exit(f"{path}: not built (cmake --preset release && cmake --build --preset release)")
    suite.args = argparse.Namespace(http_server=default["http_server"],
                                    bare_http=default["bench_bare_http"], workers=1, quick=False)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs 2 CPUs: the servers on one, wrk on the other")
    pgo = pgo_builds(os.path.join(ROOT, "build/pgo"), a.train)

    servers = {
        "procmodel": lambda: suite.procmodel(1, program=default["http_server"]),
        "bare": lambda: suite.bare(1, program=default["bench_bare_http"]),
        "procmodel, PGO": lambda: suite.procmodel(1, program=pgo["http_server"]),
        "bare, PGO": lambda: suite.bare(1, program=pgo["bench_bare_http"]),
    }
    cpu, wrk_cpu = cpus[-1], cpus[0]
    rps = {k: [] for k in servers}
    for r in range(a.rounds):
        order = list(servers.items())
        random.Random(r).shuffle(order)
        for name, make in order:
            with make() as srv:
                time.sleep(0.2)
                rps[name].append(suite.pinned_wrk(srv, cpu, wrk_cpu, a.seconds)[0]["rps"])
    print(f"{a.rounds} rounds of {a.seconds:g} s, servers on CPU {cpu}, wrk on CPU {wrk_cpu}")
    for name, v in rps.items():
        print(f"  {name:16} median {suite.median(v):8.0f} requests/s")
    for num, den in (("procmodel", "bare"), ("procmodel, PGO", "bare, PGO"),
                     ("bare, PGO", "bare"), ("procmodel, PGO", "procmodel")):
        print(f"  {num} / {den}: {suite.paired(rps[num], rps[den])}")


if __name__ == "__main__":
    main()
