#!/usr/bin/env python3
"""How many 4 KB pages of code a worker touches between two system calls.

On a machine with page-table isolation and no PCID (lscpu: `pti`, no `pcid`),
every system call empties the TLB of user pages, so each code page a request
touches after a system call costs a page walk again: the count is what a
layout of the same code changes. valgrind's lackey tool traces every
instruction the worker fetches; the trace is cut at each `syscall`
instruction in libc, and each stretch counts its distinct pages. A count, not
a sample: it is the same from run to run, where requests/s moves by 2-3%.
The data pages each stretch loads and stores are counted too, by mapping
(anon is the heap's arenas and the like).
bench/analysis.md ("procmodel against the same handler without it") cites it.

Each server runs under valgrind with 1 worker and answers N requests, one
after the other on one keep-alive connection; the second half of the
stretches is counted (the first holds the start-up).

    python3 bench/probes/code_pages.py [--requests 200] NAME=KIND:PATH...

KIND is procmodel (a program that takes http_server's options) or bare (one
that takes bench_bare_http's). Without arguments: build/release's
http_server and bench_bare_http.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import suite  # noqa: E402


def syscall_offsets(libc):
    """Offsets of every `syscall` instruction in libc's text."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", libc],
                         capture_output=True, text=True, check=True).stdout
    return [int(m[1], 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+syscall\b", out, re.M)]


def mappings(pid):
    """(low, high, offset, name, executable) of each mapping; name "" when anonymous."""
    maps = []
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        maps.append((lo, hi, int(f[2], 16), f[5] if len(f) >= 6 else "", "x" in f[1]))
    return maps


def region(maps, page):
    """The name of the mapping that holds `page`: a file's, [heap], [stack] or anon."""
    for lo, hi, _, name, _ in maps:
        if lo >> 12 <= page < hi >> 12:
            return os.path.basename(name) if name else "anon"
    return "?"


def trace(make, requests, out_dir):
    """Runs the server under lackey; returns the worker's trace and maps."""
    srv = make()
    real_spawn = srv.spawn
    srv.spawn = lambda argv: real_spawn(
        ["valgrind", "--tool=lackey", "--trace-mem=yes",
         f"--log-file={out_dir}/lackey.%p"] + argv)
    srv.start(120)
    worker = suite.children(srv.pid)[0]
    suite.requests_on_one_connection(srv.port, 5)
    maps = mappings(worker)  # after a few requests: what a request's heap is
    suite.requests_on_one_connection(srv.port, requests)
    srv.stop()
    return os.path.join(out_dir, f"lackey.{worker}"), maps


def stretches(path, syscalls):
    """Per stretch between two system calls: its code pages, instructions and
    data pages (loads and stores)."""
    out, pages, data, n = [], set(), set(), 0
    with open(path) as f:
        for line in f:
            if line[0] != "I":
                if line[0] == " " and line[1] in "LSM":
                    data.add(int(line[3:line.index(",")], 16) >> 12)
                continue
            a = int(line[3:line.index(",")], 16)
            pages.add(a >> 12)
            n += 1
            if a in syscalls:
                out.append((frozenset(pages), n, frozenset(data)))
                pages, data, n = set(), set(), 0
    return out[len(out) // 2:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("servers", nargs="*", metavar="NAME=KIND:PATH")
    a = p.parse_args()
    release = os.path.join(ROOT, "build/release")
    specs = a.servers or [f"procmodel=procmodel:{release}/examples/http/http_server",
                          f"bare=bare:{release}/bench/bench_bare_http"]
    suite.args = argparse.Namespace(http_server=f"{release}/examples/http/http_server",
                                    bare_http=f"{release}/bench/bench_bare_http", workers=1)
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install valgrind)")
    for spec in specs:
        name, rest = spec.split("=", 1)
        kind, path = rest.split(":", 1)
        make = ((lambda p=path: suite.procmodel(1, program=p)) if kind == "procmodel"
                else (lambda p=path: suite.bare(1, program=p)))
        with tempfile.TemporaryDirectory(prefix="code-pages-") as tmp:
            log, maps = trace(make, a.requests, tmp)
            libc = next(m for m in maps if m[4] and os.path.basename(m[3]).startswith("libc.so"))
            base = libc[0] - libc[2]  # where libc's file offset 0 is mapped (vaddr = offset)
            syscalls = {base + o for o in syscall_offsets(libc[3])}
            got = stretches(log, syscalls)
        per, per_data = collections.Counter(), collections.Counter()
        for pages, _, data in got:
            per.update(region(maps, page) for page in pages)
            per_data.update(region(maps, page) for page in data)
        k = len(got)

        def shares(counts):
            return ", ".join(f"{o} {c / k:.1f}" for o, c in counts.most_common() if c / k >= 0.05)
        print(f"{name}: {k} stretches, {sum(len(c) for c, _, _ in got) / k:.1f} code pages "
              f"and {sum(n for _, n, _ in got) / k:.0f} instructions each; pages by object: "
              f"{shares(per)}; data pages {sum(len(d) for _, _, d in got) / k:.1f}: "
              f"{shares(per_data)}", flush=True)


if __name__ == "__main__":
    main()
