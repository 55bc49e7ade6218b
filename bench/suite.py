#!/usr/bin/env python3
"""procmodel's benchmarks, side by side with nginx and HAProxy, in one run.

Every figure that docs/benchmarks.md shows comes from this run, on this
machine: each is a ratio procmodel/peer (or a count), never an absolute time
from another day. The servers are configured alike: the same worker count,
the same tiny answer, loopback, free ports. bench/run.sh builds the programs
and calls this; run it directly for one scenario while developing:

    bench/suite.py --build build/release --quick --only 3,6

Scenarios: 1 reload storm, 2 upgrade storm, 3 latencies, 4 throughput,
5 master cost, 6 scale, 7 spawn cost against the master's memory,
8 compile cost.
"""

import argparse
import ctypes
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
WRK = "/usr/bin/wrk"
GNUPLOT = "/usr/bin/gnuplot"


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command (state is [0])."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def live_children(pid):
    return [c for c in children(pid) if alive(c)]


def oldest_child(pid):
    kids = live_children(pid)
    return min(kids, key=lambda c: int((proc_stat(c) or [0] * 20)[19])) if kids else None


def http_ok(port, close=True):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def poll(pred, timeout, every=0.0001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def reap_orphans():
    """Upgraded masters are reparented to us (a subreaper): reap them."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


class server:
    """A master and its workers, started in a directory of its own."""

    name = ""
    reload_signal = signal.SIGHUP

    def __init__(self, workers):
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="procmodel-bench-")
        self.port = free_port()
        self.proc = None
        self.killed = False  # did not stop when asked

    @property
    def pid(self):
        return self.proc.pid

    def spawn(self, argv):
        out = open(os.path.join(self.dir, "stdio.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def up(self):
        return len(children(self.pid)) >= self.workers and http_ok(self.port)

    def start(self, timeout=30):
        self.launch()
        if not poll(self.up, timeout, 0.002):
            raise RuntimeError(f"{self.name} did not start; see {self.dir}")
        return self

    def send(self, sig):
        try:
            os.kill(self.pid, sig)
            return True
        except OSError:
            return False

    def reload(self):
        return self.send(self.reload_signal)

    def stop(self, sig=signal.SIGQUIT, timeout=30):
        if self.proc.poll() is None:
            self.send(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                for c in children(self.pid):
                    os.kill(c, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class procmodel(server):
    def __init__(self, workers, reuseport=False, program=None, extra=()):
        super().__init__(workers)
        self.name = "procmodel" + (" reuseport" if reuseport else "")
        self.reuseport = reuseport
        self.program = program or args.http_server
        self.extra = list(extra)

    def launch(self):
        conf = os.path.join(self.dir, "http.conf")
        with open(conf, "w") as f:
            f.write("greeting = hello\n")
        argv = [self.program, "--listen", f"127.0.0.1:{self.port}", "--workers",
                str(self.workers), "--pid-file", self.file("pm.pid"),
                "--log-file", self.file("pm.log")] + self.extra
        if self.program == args.http_server:
            argv += ["--config", conf]
        if self.reuseport:
            argv.append("--reuseport")
        self.spawn(argv)

    def file(self, name):
        return os.path.join(self.dir, name)


class nginx(server):
    def __init__(self, workers, reuseport=False, daemon=False):
        super().__init__(workers)
        self.name = "nginx" + (" reuseport" if reuseport else "")
        self.reuseport = reuseport
        self.daemon = daemon

    def file(self, name):
        return os.path.join(self.dir, name)

    def launch(self):
        os.makedirs(self.file("tmp"), exist_ok=True)
        conf = f"""worker_processes {self.workers};
daemon {"on" if self.daemon else "off"};
master_process on;
pid {self.file("nginx.pid")};
error_log {self.file("error.log")} notice;
events {{ worker_connections 512; }}  # nginx's default
http {{
  access_log off;
  client_body_temp_path {self.file("tmp")};
  server {{
    listen 127.0.0.1:{self.port}{" reuseport" if self.reuseport else ""};
    location / {{ return 200 "hello from nginx worker pid $pid\\n"; }}
  }}
}}
"""
        with open(self.file("nginx.conf"), "w") as f:
            f.write(conf)
        argv = [NGINX, "-p", self.dir, "-c", self.file("nginx.conf")]
        if self.daemon:
            # nginx honours USR2 only once its parent changed, as a daemon's has.
            subprocess.run(argv, check=True)
            poll(lambda: os.path.exists(self.file("nginx.pid")), 10, 0.001)
            self._pid = int(open(self.file("nginx.pid")).read())
        else:
            self.spawn(argv)

    @property
    def pid(self):
        return self._pid if self.daemon else self.proc.pid

    def stop(self, sig=signal.SIGQUIT, timeout=30):
        if not self.daemon:
            return super().stop(sig, timeout)
        try:
            pid = int(open(self.file("nginx.pid")).read())
            os.kill(pid, sig)
            poll(lambda: not alive(pid), timeout, 0.01)
        except (OSError, ValueError):
            pass
        reap_orphans()


class haproxy(server):
    """HAProxy master-worker (-W): one worker process with a thread per
    worker of the others; USR2 reloads (the master re-executes itself)."""

    reload_signal = signal.SIGUSR2

    def __init__(self, workers):
        super().__init__(workers)
        self.name = "HAProxy -W"

    def up(self):
        return len(children(self.pid)) >= 1 and http_ok(self.port)

    def launch(self):
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""global
  nbthread {self.workers}
  pidfile {os.path.join(self.dir, "haproxy.pid")}
defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server 5s
  timeout http-keep-alive 75s
frontend web
  bind 127.0.0.1:{self.port}
  http-request return status 200 content-type text/plain string "hello from haproxy"
""")
        self.spawn([HAPROXY, "-W", "-f", conf])

    def stop(self, sig=signal.SIGTERM, timeout=30):
        # Idle by then: a hard stop loses nothing (SIGQUIT only dumps pools).
        super().stop(sig, timeout)


class bare(server):
    def __init__(self, workers, program=None):
        super().__init__(workers)
        self.name = "same handler, no procmodel"
        self.program = program or args.bare_http

    def launch(self):
        self.spawn([self.program, "--port", str(self.port), "--workers", str(self.workers)])

    def stop(self, sig=signal.SIGTERM, timeout=30):
        super().stop(sig, timeout)


# --- load -------------------------------------------------------------------------


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(out):
    r = {"requests": 0, "errors": 0, "rps": 0.0, "out": out}
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m[1])
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] += sum(int(m[i]) for i in range(1, 5))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["errors"] += int(m[1])
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m[1])
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m:
            r["p" + p] = float(m[1]) * UNITS[m[2]]
    return r


def wrk_start(port, seconds, close=False, threads=2, conns=50, latency=False, script=None,
              cpu=None):
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu)] + argv
    if latency:
        argv.append("--latency")
    if close:
        argv += ["-H", "Connection: close"]
    if script:
        argv += ["-s", script]
    argv.append(f"http://127.0.0.1:{port}/")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk(port, seconds, **kw):
    p = wrk_start(port, seconds, **kw)
    out, _ = p.communicate()
    return parse_wrk(out)


class ticker:
    """Sends `fn` every `period` seconds on a thread, while in a with block."""

    def __init__(self, period, fn):
        self.period, self.fn, self.count = period, fn, 0
        self.stop_ = threading.Event()

    def run(self):
        while not self.stop_.wait(self.period):
            if self.fn():
                self.count += 1

    def __enter__(self):
        self.t = threading.Thread(target=self.run)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_.set()
        self.t.join()


# --- statistics and tables ----------------------------------------------------------


def median(v):
    return statistics.median(v) if v else float("nan")


def p99(v):
    if not v:
        return float("nan")
    s = sorted(v)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def ratio(a, b):
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"


def ms(v):
    return f"{v:.2f}" if v == v else "n/a"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


# --- scenarios ----------------------------------------------------------------------


def storm(make, close, seconds):
    """wrk in one-second slices while the master reloads every 200 ms."""
    slices = []
    with make() as srv:
        time.sleep(0.2)
        t0 = time.monotonic()
        with ticker(0.2, srv.reload) as t:
            while time.monotonic() - t0 < seconds:
                r = wrk(srv.port, 1, close=close)
                slices.append((time.monotonic() - t0, r["requests"], r["errors"]))
        reloads = t.count
        time.sleep(0.5)  # let the last reload settle before the stop
    return {"slices": slices, "requests": sum(s[1] for s in slices),
            "errors": sum(s[2] for s in slices), "reloads": reloads}


def scenario_reload_storm(res):
    w, secs = args.workers, args.storm
    servers = [("procmodel", lambda: procmodel(w)),
               ("procmodel reuseport", lambda: procmodel(w, reuseport=True)),
               ("nginx", lambda: nginx(w)),
               ("nginx reuseport", lambda: nginx(w, reuseport=True)),
               ("HAProxy -W, USR2", lambda: haproxy(w))]
    out = {}
    for name, make in servers:
        for close in (False, True):
            out[(name, close)] = storm(make, close, secs)
            log(f"storm {name} {'close' if close else 'keep-alive'}: "
                f"{out[(name, close)]['errors']} errors")
    res["storm"] = out
    rows = []
    for (name, close), r in out.items():
        rows.append([name, "close" if close else "keep-alive", r["reloads"], r["requests"],
                     r["errors"], f"{100.0 * r['errors'] / max(1, r['requests']):.3f}%"])
    pm_rps = {c: out[("procmodel", c)]["requests"] for c in (False, True)}
    ng_rps = {c: out[("nginx", c)]["requests"] for c in (False, True)}
    return (f"A reload every 200 ms for {secs} s under wrk (2 threads, 50 connections, in "
            f"one-second runs back to back), {w} workers each. Failed = socket errors + "
            f"non-2xx, as wrk counts them.\n\n"
            + table(["server", "clients", "reloads", "requests", "failed", "failed share"], rows)
            + f"\nRequests served through the storm, procmodel/nginx: keep-alive "
            f"{ratio(pm_rps[False], ng_rps[False])}, close {ratio(pm_rps[True], ng_rps[True])}.\n\n"
            "![requests/s and errors across a reload storm](benchmarks-storm.png)\n")


def upgrade_procmodel(srv):
    r = subprocess.run([args.http_server, "-s", "upgrade", "--pid-file", srv.file("pm.pid")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return r.returncode == 0


def upgrade_nginx(srv):
    pid_path = srv.file("nginx.pid")
    old = int(open(pid_path).read())
    os.kill(old, signal.SIGUSR2)

    def new_master():
        try:
            text = open(pid_path).read()
            return text and int(text) != old and os.path.exists(pid_path + ".oldbin")
        except (OSError, ValueError):
            return False

    if not poll(new_master, 10, 0.001):
        return False
    new = int(open(pid_path).read())
    if not poll(lambda: len(live_children(new)) >= srv.workers, 10, 0.001):
        return False
    os.kill(old, signal.SIGWINCH)
    poll(lambda: all(c == new for c in live_children(old)), 10, 0.001)
    os.kill(old, signal.SIGQUIT)
    return poll(lambda: not alive(old), 10, 0.001)


def scenario_upgrade_storm(res):
    w, n, secs = args.workers, args.upgrades, args.storm
    rows, out = [], {}
    for name, make, upgrade in (("procmodel -s upgrade", lambda: procmodel(w), upgrade_procmodel),
                                ("nginx USR2/WINCH/QUIT", lambda: nginx(w, daemon=True),
                                 upgrade_nginx)):
        srv = make().start()
        load = wrk_start(srv.port, secs)
        took, failed = [], 0
        gap = secs / (n + 1)
        for _ in range(n):
            time.sleep(gap)
            t0 = time.monotonic()
            if upgrade(srv):
                took.append((time.monotonic() - t0) * 1e3)
            else:
                failed += 1
        r = parse_wrk(load.communicate()[0])
        if isinstance(srv, procmodel):
            # The master now serving is the last upgrade's, reparented to us.
            try:
                os.kill(int(open(srv.file("pm.pid")).read()), signal.SIGQUIT)
            except (OSError, ValueError):
                pass
            time.sleep(1)
            srv.stop()
        else:
            srv.stop()
        reap_orphans()
        out[name] = (r, took, failed)
        rows.append([name, f"{len(took)}/{n}", r["requests"], r["errors"], ms(median(took))])
        log(f"upgrades {name}: {r['errors']} errors, {ms(median(took))} ms")
    res["upgrade"] = out
    (pr, pt, _), (nr, nt, _) = out.values()
    return (f"{n} hot binary upgrades in {secs} s under wrk (keep-alive, 2 threads, 50 "
            f"connections), {w} workers each.\n\n"
            + table(["server", "upgraded", "requests", "failed", "upgrade, median ms"], rows)
            + f"\nprocmodel/nginx: upgrade time {ratio(median(pt), median(nt))}, requests "
            f"served {ratio(pr['requests'], nr['requests'])}.\n")


# The checks below read the master's list of children only (a dead child
# leaves it once reaped): reading every child's state at 256 workers would
# take the CPU the masters need.


def reload_latency(srv, timeout=10):
    old = set(children(srv.pid))
    t0 = time.monotonic()
    srv.reload()

    def done():
        kids = children(srv.pid)
        return not old & set(kids) and len(kids) == srv.workers

    if not poll(done, timeout, 0.0002 if srv.workers < 64 else 0.001):
        return None
    took = (time.monotonic() - t0) * 1e3
    return took if http_ok(srv.port) else None


def respawn_latency(srv):
    victim = oldest_child(srv.pid)
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    def done():
        kids = children(srv.pid)
        return victim not in kids and len(kids) == srv.workers

    if not poll(done, 10, 0.0002):
        return None
    took = (time.monotonic() - t0) * 1e3
    return took if http_ok(srv.port) else None


def stop_latency(make):
    srv = make().start()
    time.sleep(0.05)
    t0 = time.monotonic()
    srv.send(signal.SIGQUIT)
    srv.proc.wait(30)
    return (time.monotonic() - t0) * 1e3


def samples(fn, n, gap):
    out = []
    for _ in range(n):
        v = fn()
        if v is not None:
            out.append(v)
        time.sleep(gap)
    return out


def scenario_latencies(res):
    n = args.rounds
    # Eight workers, the oldest killed each time: every slot stays under the
    # restart intensity (5 in 10 s) however many rounds.
    w = 8
    out = {}
    for name, make in (("procmodel", lambda: procmodel(w)), ("nginx", lambda: nginx(w))):
        with make() as srv:
            time.sleep(0.2)
            rl = samples(lambda: reload_latency(srv), n, 0.05)
            rs = samples(lambda: respawn_latency(srv), n, 0.25)
        st = [stop_latency(make) for _ in range(max(3, n // 3))]
        out[name] = {"reload": rl, "respawn": rs, "stop": st}
        log(f"latencies {name}: reload {ms(median(rl))}, respawn {ms(median(rs))}, "
            f"stop {ms(median(st))}")
    res["latencies"] = out
    pm, ng = out["procmodel"], out["nginx"]
    rows = []
    for what, label in (("reload", "idle reload"), ("respawn", "respawn after kill -9"),
                        ("stop", "graceful stop")):
        rows.append([label, len(pm[what]), ms(median(pm[what])), ms(p99(pm[what])),
                     ms(median(ng[what])), ms(p99(ng[what])),
                     ratio(median(pm[what]), median(ng[what])), ratio(p99(pm[what]), p99(ng[what]))])
    return (f"{w} workers each, idle. Reload: the signal until every old worker is gone, "
            f"{w} new ones run and one answers. Respawn: kill -9 of the oldest worker until "
            "its replacement runs and the port answers. Graceful stop: SIGQUIT until the "
            "master has exited.\n\n"
            + table(["latency", "rounds", "procmodel median ms", "p99", "nginx median ms", "p99",
                     "median procmodel/nginx", "p99 procmodel/nginx"], rows))


BALANCE_LUA = r"""
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local pid = body:match("pid (%d+)")
  if pid then counts[pid] = (counts[pid] or 0) + 1 end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for pid, n in pairs(t:get("counts")) do total[pid] = (total[pid] or 0) + n end
  end
  for pid, n in pairs(total) do io.write(string.format("BALANCE %s %d\n", pid, n)) end
end
"""


PIN_SECS = 3


def pinned_wrk(srv, cpu, wrk_cpu, seconds):
    """wrk (1 thread) on CPU `wrk_cpu` against `srv`, its master and workers
    pinned to CPU `cpu`: wrk's figures, and the workers' CPU µs per request."""
    kids = children(srv.pid)
    for pid in [srv.pid] + kids:
        os.sched_setaffinity(pid, {cpu})
    c0 = sum(cpu_ticks(p) for p in kids)
    got = parse_wrk(wrk_start(srv.port, seconds, threads=1, cpu=wrk_cpu).communicate()[0])
    c1 = sum(cpu_ticks(p) for p in kids)
    return got, (c1 - c0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(1, got["requests"])


def pinned_overhead():
    """procmodel and the bare program pinned to one CPU we may use, wrk to another.

    With 1 worker a third server runs too: the bare program built with a far
    larger inlining budget (bench_bare_http_inlined), the same work per request
    in other machine code. Its ratio to the bare program is what code generation
    alone moves this handler by. Each round runs every server once, in an order
    of its own, and each server's ratio is also taken round by round (paired).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    cpu, wrk_cpu = cpus[-1], cpus[0]
    # The 1-worker comparison is the 2% bar: 16 rounds, where 10 left
    # its median moving by about as much between runs; 2 workers every other round.
    rounds = 3 if args.quick else 16
    one = [("procmodel", 1, procmodel), ("bare", 1, bare)]
    two = [("procmodel", 2, procmodel), ("bare", 2, bare)]
    if os.access(args.bare_http_inlined, os.X_OK):
        one.append(("bare, inlined", 1, lambda w: bare(w, program=args.bare_http_inlined)))
    else:
        log(f"pinned: no {args.bare_http_inlined}, no inlining control")
    out = {}
    for r in range(rounds):
        order = one + (two if r % 2 == 0 else [])
        random.Random(r).shuffle(order)
        for name, w, make in order:
            with make(w) as srv:
                time.sleep(0.2)
                got, us = pinned_wrk(srv, cpu, wrk_cpu, PIN_SECS)
            o = out.setdefault((name, w), {"rps": [], "us": []})
            o["rps"].append(got["rps"])
            o["us"].append(us)
    log("pinned " + ", ".join(f"{k}/{w}: {median(v['rps']):.0f} req/s {median(v['us']):.2f} us"
                              for (k, w), v in out.items()))
    out["cpu"], out["wrk_cpu"] = cpu, wrk_cpu
    return out


def paired(a, b):
    """Median and quartiles of the round-by-round ratios a[i] / b[i]."""
    r = sorted(x / y for x, y in zip(a, b) if y)
    if len(r) < 2:
        return "n/a"
    q = statistics.quantiles(r, n=4)
    return f"{median(r):.3f}x ({q[0]:.3f}–{q[2]:.3f})"


def scenario_throughput(res):
    secs, rounds = args.load, args.load_rounds
    makers = {"procmodel": lambda w: procmodel(w), "nginx": lambda w: nginx(w),
              "bare": lambda w: bare(w)}
    rps = {(k, w): [] for k in makers for w in (1, 2)}
    cpu = {(k, w): [] for k in makers for w in (1, 2)}
    hz = os.sysconf("SC_CLK_TCK")
    for _ in range(rounds):  # interleaved: a busy neighbour hits every server alike
        for w in (1, 2):
            for k, make in makers.items():
                with make(w) as srv:
                    time.sleep(0.2)
                    procs = [srv.pid] + children(srv.pid)
                    c0 = sum(cpu_ticks(p) for p in procs)
                    r = wrk(srv.port, secs)
                    c1 = sum(cpu_ticks(p) for p in procs)
                rps[(k, w)].append(r["rps"])
                cpu[(k, w)].append((c1 - c0) * 1e6 / hz / max(1, r["requests"]))
    med = {key: median(v) for key, v in rps.items()}
    mcpu = {key: median(v) for key, v in cpu.items()}
    log("throughput " + ", ".join(f"{k}/{w}: {v:.0f}" for (k, w), v in med.items()))
    log("CPU us/request " + ", ".join(f"{k}/{w}: {v:.1f}" for (k, w), v in mcpu.items()))
    rows = [[w, f"{med[('procmodel', w)]:.0f}", f"{med[('nginx', w)]:.0f}",
             f"{med[('bare', w)]:.0f}", ratio(med[("procmodel", w)], med[("nginx", w)]),
             ratio(med[("procmodel", w)], med[("bare", w)])] for w in (1, 2)]
    text = (f"wrk -t2 -c50 keep-alive for {secs} s, median of {rounds} interleaved rounds. "
            "*Bare* is http_server's own session (examples/http/session.hpp) in "
            "bench/bare_http.cpp: forked processes accepting on one socket in a plain Asio "
            "loop, no procmodel.\n\n"
            + table(["workers", "procmodel req/s", "nginx req/s", "bare req/s",
                     "procmodel/nginx", "procmodel/bare"], rows))
    rows = [[w, ms(mcpu[("procmodel", w)]), ms(mcpu[("nginx", w)]), ms(mcpu[("bare", w)]),
             ratio(mcpu[("procmodel", w)], mcpu[("nginx", w)]),
             ratio(mcpu[("procmodel", w)], mcpu[("bare", w)])] for w in (1, 2)]
    text += ("\nThe same runs as server CPU time (user + system of the master and every "
             "worker) per request, in µs: wrk and the servers share the 2 cores, so "
             "requests/s move with whatever else runs; the CPU a request costs moves much "
             "less.\n\n"
             + table(["workers", "procmodel µs/req", "nginx µs/req", "bare µs/req",
                      "procmodel/nginx", "procmodel/bare"], rows))

    pinned = pinned_overhead()
    if pinned:
        keys = [k for k in (("procmodel", 1), ("bare, inlined", 1), ("procmodel", 2)) if k in pinned]
        rows = [[f"{k} ({w} worker{'s' if w > 1 else ''})", len(pinned[(k, w)]["rps"]),
                 f"{median(pinned[(k, w)]['rps']):.0f}",
                 f"{median(pinned[('bare', w)]['rps']):.0f}",
                 ratio(median(pinned[(k, w)]["rps"]), median(pinned[("bare", w)]["rps"])),
                 paired(pinned[(k, w)]["rps"], pinned[("bare", w)]["rps"]),
                 ms(median(pinned[(k, w)]["us"])), ms(median(pinned[("bare", w)]["us"])),
                 ratio(median(pinned[(k, w)]["us"]), median(pinned[("bare", w)]["us"]))]
                for k, w in keys]
        text += (f"\nprocmodel's own overhead, with the servers pinned to CPU {pinned['cpu']} and "
                 f"wrk (1 thread, 50 keep-alive connections) to CPU {pinned['wrk_cpu']}, so neither "
                 "takes the other's core: requests/s and the workers' CPU per request against "
                 f"the bare program with as many workers, medians of rounds of {PIN_SECS} s "
                 "(each round runs every 1-worker server once, every other round the 2-worker "
                 "ones too, in an order of its own), and the round-by-round ratio "
                 "(median and quartiles): servers measured seconds apart, so a change in the "
                 "machine's speed during the run, which moves the two columns' medians apart, "
                 "cancels out. Unpinned, the scheduler's placement of wrk's threads "
                 "and the workers moves requests/s by more than the 2% compared here. "
                 "*bare, inlined* is the bare program built again with a far larger inlining "
                 "budget (GCC's `inline-unit-growth`): the same source and work per request, "
                 "other machine code, so its row is how far code generation alone moves this "
                 "handler.\n\n"
                 + table(["server", "rounds", "req/s", "bare req/s", "vs bare",
                          "vs bare, round by round",
                          "µs/req", "bare µs/req", "vs bare"], rows))
        res["pinned"] = pinned

    if shutil.which("valgrind"):
        ipr = {k: instructions_per_request(makers[k]) for k in ("procmodel", "bare")}
        log(f"instructions per request: {ipr}")
        text += ("\nInstructions a worker executes per request (callgrind, user space: "
                 "one connection, requests one after the other; the difference of a run of "
                 "2500 and one of 500 requests, so start and stop cancel out). Unlike "
                 "requests/s, this does not move with the machine's load.\n\n"
                 + table(["server", "instructions/request", "procmodel/bare"],
                         [["procmodel", f"{ipr['procmodel']:.0f}",
                           ratio(ipr["procmodel"], ipr["bare"])],
                          ["bare", f"{ipr['bare']:.0f}", "1.00x"]]))
        res["instructions"] = ipr

    script = os.path.join(tempfile.mkdtemp(prefix="procmodel-bench-"), "balance.lua")
    with open(script, "w") as f:
        f.write(BALANCE_LUA)
    rows = []
    for name, make in (("procmodel", lambda: procmodel(2)),
                       ("procmodel reuseport", lambda: procmodel(2, reuseport=True)),
                       ("nginx", lambda: nginx(2)), ("nginx reuseport", lambda: nginx(2, True)),
                       ("bare", lambda: bare(2))):
        with make() as srv:
            out = wrk_start(srv.port, secs, close=True, script=script).communicate()[0]
        counts = sorted((int(n) for n in re.findall(r"^BALANCE \d+ (\d+)$", out, re.M)),
                        reverse=True)
        total = max(1, sum(counts))
        rows.append([name, " / ".join(f"{100.0 * c / total:.1f}%" for c in counts),
                     ratio(counts[-1], counts[0]) if len(counts) > 1 else "n/a"])
    text += ("\nAccepted connections per worker: 2 workers, wrk with `Connection: close` for "
             f"{secs} s, every answer naming its worker.\n\n"
             + table(["server", "share of connections per worker", "least/most"], rows))

    rows = []
    stall = {}
    for name, make in (("procmodel", lambda: procmodel(2)),
                       ("procmodel reuseport", lambda: procmodel(2, reuseport=True)),
                       ("nginx", lambda: nginx(2)), ("nginx reuseport", lambda: nginx(2, True))):
        for close in (False, True):
            with make() as srv:
                time.sleep(0.2)
                load = wrk_start(srv.port, 4, close=close, latency=True)
                time.sleep(1.5)
                victim = oldest_child(srv.pid)
                os.kill(victim, signal.SIGSTOP)
                time.sleep(1)
                os.kill(victim, signal.SIGCONT)
                r = parse_wrk(load.communicate()[0])
            stall[(name, close)] = r
            rows.append([name, "close" if close else "keep-alive", ms(r.get("p50", float("nan"))),
                         ms(r.get("p99", float("nan"))), r["errors"]])
    text += ("\nOne of 2 workers stopped (SIGSTOP) for 1 s in the middle of a 4 s wrk run: "
             "latency percentiles over the whole run.\n\n"
             + table(["server", "clients", "median ms", "p99 ms", "failed"], rows))
    res["throughput"] = {"rps": med, "cpu": mcpu, "stall": stall}
    return text


def requests_on_one_connection(port, n):
    """Sends n GETs one after the other on one kept-alive connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        buf = b""
        for _ in range(n):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
                    total = end + 4 + int(m[1])
                    if len(buf) >= total:
                        buf = buf[total:]
                        break
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                buf += chunk


def worker_instructions(make, n):
    """Instructions one worker executes (callgrind) for n requests, start and stop included."""
    srv = make(1)
    out = os.path.join(srv.dir, "callgrind.%p")
    real = srv.spawn

    def spawn(argv):
        real(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv)

    srv.spawn = spawn
    srv.start(120)
    worker = children(srv.pid)[0]
    requests_on_one_connection(srv.port, n)
    srv.stop()
    with open(os.path.join(srv.dir, f"callgrind.{worker}")) as f:
        m = re.search(r"^totals: (\d+)", f.read(), re.M)
    return int(m[1])


def instructions_per_request(make, few=500, many=2500):
    """The difference of two runs: what a request costs, without start and stop."""
    return (worker_instructions(make, many) - worker_instructions(make, few)) / (many - few)


def status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    st = proc_stat(pid)
    return int(st[11]) + int(st[12])


def switches(pid):
    return status_field(pid, "voluntary_ctxt_switches") + status_field(
        pid, "nonvoluntary_ctxt_switches")


def scenario_master_cost(res):
    secs = args.idle
    w = args.workers
    srvs = [procmodel(w).start(), nginx(w).start(), haproxy(w).start()]
    time.sleep(1)
    before = {s.name: (switches(s.pid), cpu_ticks(s.pid)) for s in srvs}
    time.sleep(secs)
    hz = os.sysconf("SC_CLK_TCK")
    rows, out = [], {}
    for s in srvs:
        sw0, c0 = before[s.name]
        worker = oldest_child(s.pid)
        v = {"wakeups": (switches(s.pid) - sw0) / secs,
             "cpu_ms": (cpu_ticks(s.pid) - c0) * 1000.0 / hz / secs,
             "rss": status_field(s.pid, "VmRSS"), "pss": pss_kb(s.pid),
             "wrss": status_field(worker, "VmRSS"), "wpss": pss_kb(worker)}
        out[s.name] = v
        rows.append([s.name, f"{v['wakeups']:.1f}", f"{v['cpu_ms']:.1f}", v["rss"], v["pss"],
                     v["wrss"], v["wpss"]])
        s.stop()
    res["master"] = out
    pm, ng = out["procmodel"], out["nginx"]
    return (f"{w} workers each, idle for {secs} s. Wake-ups: the master's context switches "
            "(voluntary + involuntary) per second; CPU: the master's user + system time "
            "per second; memory from /proc (kB; PSS from smaps_rollup).\n\n"
            + table(["server", "master wake-ups/s", "master CPU ms/s", "master RSS", "master PSS",
                     "worker RSS", "worker PSS"], rows)
            + f"\nprocmodel/nginx: master RSS {ratio(pm['rss'], ng['rss'])}, PSS "
            f"{ratio(pm['pss'], ng['pss'])}; worker RSS {ratio(pm['wrss'], ng['wrss'])}, PSS "
            f"{ratio(pm['wpss'], ng['wpss'])}.\n")


def mass_kill(srv):
    victims = set(children(srv.pid))
    t0 = time.monotonic()
    for v in victims:
        os.kill(v, signal.SIGKILL)

    def done():
        kids = children(srv.pid)
        return len(kids) == srv.workers and not victims & set(kids)

    if not poll(done, 60, 0.001):
        return None
    return (time.monotonic() - t0) * 1e3


def scale_run(make, rounds):
    r = {"start": [], "reload": [], "kill": [], "stop": []}
    for _ in range(rounds):
        t0 = time.monotonic()
        srv = make().start(60)
        r["start"].append((time.monotonic() - t0) * 1e3)
        time.sleep(0.3)
        v = reload_latency(srv, 60)
        if v is not None:
            r["reload"].append(v)
        time.sleep(0.3)
        v = mass_kill(srv)
        if v is not None:
            r["kill"].append(v)
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.send(signal.SIGQUIT)
        srv.proc.wait(60)
        r["stop"].append((time.monotonic() - t0) * 1e3)
    return {k: median(v) for k, v in r.items()}


def scenario_scale(res):
    rounds = args.scale_rounds
    out = {}
    for n in (64, 256):
        for name, make in (("procmodel", lambda: procmodel(n)), ("nginx", lambda: nginx(n))):
            out[(name, n)] = scale_run(make, rounds)
            log(f"scale {name} {n}: {out[(name, n)]}")
    res["scale"] = out
    rows = []
    for what, label in (("start", "start"), ("reload", "reload"),
                        ("kill", "mass kill -9, all replaced"), ("stop", "graceful stop")):
        p64, p256 = out[("procmodel", 64)][what], out[("procmodel", 256)][what]
        n64, n256 = out[("nginx", 64)][what], out[("nginx", 256)][what]
        rows.append([label, ms(p64), ms(n64), ratio(p64, n64), ms(p256), ms(n256),
                     ratio(p256, n256), ratio(p256, p64), ratio(n256, n64)])
    return (f"Median of {rounds} rounds, ms. Start: launch until every worker runs and the port "
            "answers; reload: as above; mass kill: kill -9 of every worker until as many new "
            "ones run; graceful stop: SIGQUIT until the master exits (idle).\n\n"
            + table(["operation", "procmodel 64", "nginx 64", "ratio", "procmodel 256",
                     "nginx 256", "ratio", "procmodel 256/64", "nginx 256/64"], rows)
            + "\n![scale: procmodel and nginx at 64 and 256 workers](benchmarks-scale.png)\n")


def spawn_cost_run(w, mb, extra):
    """Respawn (median of --rounds) and one mass kill under a master that touched `mb` MB."""
    srv = procmodel(w, program=args.big_master, extra=["--touch-mb", str(mb)] + extra).start(60)
    time.sleep(0.2)
    rs = samples(lambda: respawn_latency(srv), args.rounds, 0.25)
    time.sleep(0.3)
    kills = [mass_kill(srv)]
    rss = status_field(srv.pid, "VmRSS") // 1024
    srv.stop()
    return {"respawn": median(rs), "kill": median([k for k in kills if k]), "rss": rss}


def scenario_spawn_cost(res):
    sizes = [0, 100] + ([] if args.quick else [1024])
    n, w = args.rounds, 8
    kinds = (("forked worker", []),
             ("exec'd program", ["--exec", os.path.abspath(args.bare_http)]))
    out = {}
    rows = []
    for kind, extra in kinds:
        for mb in sizes:
            r = out[(kind, mb)] = spawn_cost_run(w, mb, extra)
            log(f"spawn cost, {kind}, {mb} MB: {r}")
            base = out[(kind, 0)]
            rows.append([kind, mb, r["rss"], ms(r["respawn"]), ratio(r["respawn"], base["respawn"]),
                         ms(r["kill"]), ratio(r["kill"], base["kill"])])
    res["spawn"] = out
    return ("bench/big_master.cpp: a master that touched `--touch-mb` MB before it started "
            f"{w} workers: http_server's worker, forked, or bench_bare_http run by exec_spawner "
            f"(`--exec`). Respawn as above (median of {n}); mass kill of all {w} workers.\n\n"
            + table(["worker", "master touched MB", "master RSS MB", "respawn ms", "vs 0 MB",
                     f"mass kill of {w} ms", "vs 0 MB"], rows))


def scenario_compile(res):
    rounds = "1" if args.quick else "2"
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "compile_cost.sh"), rounds],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"bench/compile_cost.sh failed:\n\n```\n{r.stderr}\n```\n"
    return ("bench/compile_cost.sh: the README's quick start against a bare Boost.Asio "
            "program doing the same job (bench/compile/bare_asio.cpp).\n\n" + r.stdout)


# --- plots --------------------------------------------------------------------------


def gnuplot(docs, name, size, script):
    """Draws `script` into docs/NAME.png and docs/NAME.svg."""
    text = "".join(f"set terminal {term} size {size}\nset output '{docs}/{name}.{ext}'\n"
                   f"set termoption noenhanced\n{script}"
                   for term, ext in (("pngcairo", "png"), ("svg", "svg")))
    subprocess.run([GNUPLOT], input=text, text=True, check=True)


def plot(res, docs):
    data = tempfile.mkdtemp(prefix="procmodel-bench-plot-")
    storm = res.get("storm")
    if storm:
        files = {}
        for (name, close), r in storm.items():
            if name not in ("procmodel", "nginx"):
                continue
            path = os.path.join(data, f"{name}-{'close' if close else 'ka'}.dat")
            with open(path, "w") as f:
                for t, req, err in r["slices"]:
                    f.write(f"{t:.2f} {req} {err}\n")
            files[(name, close)] = path
        gp = ("set multiplot layout 2,1\nset grid\nset key outside right\n"
              "set ylabel 'requests/s'\nset y2label 'failed/s'\nset y2tics\nset ytics nomirror\n"
              "set xlabel 'seconds into the storm (a reload every 200 ms)'\n")
        for close in (False, True):
            pm, ng = files[("procmodel", close)], files[("nginx", close)]
            gp += (f"set title 'Reload storm, {'Connection: close' if close else 'keep-alive'}'\n"
                   f"plot '{pm}' u 1:2 w lp t 'procmodel req/s', '{ng}' u 1:2 w lp t 'nginx req/s', "
                   f"'{pm}' u 1:3 axes x1y2 w impulses lw 3 t 'procmodel failed', "
                   f"'{ng}' u 1:3 axes x1y2 w points pt 7 t 'nginx failed'\n")
        gnuplot(docs, "benchmarks-storm", "900,700", gp + "unset multiplot\n")
    scale = res.get("scale")
    if scale:
        path = os.path.join(data, "scale.dat")
        with open(path, "w") as f:
            for what in ("start", "reload", "kill", "stop"):
                for n in (64, 256):
                    f.write(f"{what}:{n} {scale[('procmodel', n)][what]:.3f} "
                            f"{scale[('nginx', n)][what]:.3f}\n")
        gnuplot(docs, "benchmarks-scale", "900,450",
                "set style data histograms\nset style histogram clustered gap 1\n"
                "set style fill solid 0.8 border -1\nset grid ytics\nset logscale y\n"
                "set ylabel 'ms (log scale)'\nset title 'Scale: operation:workers, median ms'\n"
                f"plot '{path}' u 2:xtic(1) t 'procmodel', '' u 3 t 'nginx'\n")


# --- main -----------------------------------------------------------------------------


SCENARIOS = [
    (1, "Reload storm", scenario_reload_storm),
    (2, "Upgrade storm", scenario_upgrade_storm),
    (3, "Latencies: idle reload, respawn, graceful stop", scenario_latencies),
    (4, "Throughput, balance, a stopped worker", scenario_throughput),
    (5, "Master cost while idle", scenario_master_cost),
    (6, "Scale: 64 and 256 workers", scenario_scale),
    (7, "Spawn cost against the master's resident memory", scenario_spawn_cost),
    (8, "Compile cost", scenario_compile),
]


def summary(res):
    """The figures the issue's bar is about, from this run's results."""
    rows = []
    if "storm" in res:
        st = res["storm"]
        for close in (False, True):
            rows.append([f"failed requests, reload storm, {'close' if close else 'keep-alive'}",
                         st[("procmodel", close)]["errors"], st[("nginx", close)]["errors"],
                         "-"])
    if "upgrade" in res:
        (pr, _, _), (nr, _, _) = res["upgrade"].values()
        rows.append(["failed requests, upgrade storm", pr["errors"], nr["errors"], "-"])
    if "latencies" in res:
        pm, ng = res["latencies"]["procmodel"], res["latencies"]["nginx"]
        for what in ("reload", "respawn", "stop"):
            rows.append([f"{what} latency, median ms", ms(median(pm[what])), ms(median(ng[what])),
                         ratio(median(pm[what]), median(ng[what]))])
    if "scale" in res:
        sc = res["scale"]
        for n in (64, 256):
            p, g = sc[("procmodel", n)]["kill"], sc[("nginx", n)]["kill"]
            rows.append([f"mass kill -9 of {n}, all replaced, ms", ms(p), ms(g), ratio(p, g)])
    if "throughput" in res:
        rps = res["throughput"]["rps"]
        for w in (1, 2):
            rows.append([f"requests/s, {w} worker{'s' if w > 1 else ''} (noisy)",
                         f"{rps[('procmodel', w)]:.0f}", f"{rps[('nginx', w)]:.0f}",
                         ratio(rps[("procmodel", w)], rps[("nginx", w)])])
    text = ""
    if rows:
        text += table(["figure", "procmodel", "nginx", "procmodel/nginx"], rows)
    if "instructions" in res or "throughput" in res:
        text += "\nAgainst the same handler without procmodel:"
        if "instructions" in res:
            ipr = res["instructions"]
            text += f" instructions per request {ratio(ipr['procmodel'], ipr['bare'])}"
        if "pinned" in res:
            pin = {k: v["rps"] for k, v in res["pinned"].items() if k not in ("cpu", "wrk_cpu")}
            text += (f"; requests/s pinned to one core, round by round (median and quartiles), "
                     f"{paired(pin[('procmodel', 1)], pin[('bare', 1)])} with 1 worker and "
                     f"{paired(pin[('procmodel', 2)], pin[('bare', 2)])} with 2")
            if ("bare, inlined", 1) in pin:
                text += (", where the bare program itself, built with another inlining budget, "
                         f"is {paired(pin[('bare, inlined', 1)], pin[('bare', 1)])}")
        if "throughput" in res:
            rps = res["throughput"]["rps"]
            text += (f"; unpinned (noisy) {ratio(rps[('procmodel', 1)], rps[('bare', 1)])} with 1 "
                     f"worker, {ratio(rps[('procmodel', 2)], rps[('bare', 2)])} with 2")
        text += ".\n"
    return f"## Summary\n\n{text}\n" if text else ""


def smoke():
    """Each server of the suite starts, answers and stops: the plumbing, no figures."""
    makers = [lambda: procmodel(2), lambda: procmodel(2, reuseport=True), lambda: bare(2),
              lambda: procmodel(2, program=args.big_master, extra=["--touch-mb", "1"]),
              lambda: procmodel(2, program=args.big_master,
                                extra=["--exec", os.path.abspath(args.bare_http)])]
    if os.access(NGINX, os.X_OK):
        makers.append(lambda: nginx(2))
    if os.access(HAPROXY, os.X_OK):
        makers.append(lambda: haproxy(2))
    for make in makers:
        with make() as srv:
            if not http_ok(srv.port):
                log(f"{srv.name} did not answer")
                return 1
            if not isinstance(srv, (haproxy, bare)) and respawn_latency(srv) is None:
                log(f"{srv.name}: no worker replaced a killed one")
                return 1
        if srv.killed:
            log(f"{srv.name} did not stop when asked")
            return 1
        log(f"{srv.name}: started, answered, stopped")
    return 0


def version(name, argv):
    """`name` and the first version number the program prints about itself."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
        m = re.search(r"\d+\.\d+(\.\d+)?", r.stdout + r.stderr)
        return f"{name} {m[0]}" if m else name
    except OSError:
        return name


def main():
    global args
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--quick", action="store_true", help="a short smoke run (about 2 minutes)")
    p.add_argument("--only", default="", help="comma-separated scenario numbers")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--smoke", action="store_true",
                   help="only start each server once, ask it once and stop it (seconds)")
    for prog in ("http-server", "bare-http", "bare-http-inlined", "big-master"):
        p.add_argument("--" + prog, help="the program (default: under --build)")
    args = p.parse_args()
    args.http_server = args.http_server or os.path.join(args.build, "examples", "http",
                                                        "http_server")
    args.bare_http = args.bare_http or os.path.join(args.build, "bench", "bench_bare_http")
    args.bare_http_inlined = args.bare_http_inlined or os.path.join(args.build, "bench",
                                                                    "bench_bare_http_inlined")
    args.big_master = args.big_master or os.path.join(args.build, "bench", "bench_big_master")
    if args.smoke:
        sys.exit(smoke())
    args.workers = 2
    if args.quick:
        args.storm, args.upgrades, args.rounds, args.load, args.load_rounds = 3, 2, 6, 2, 1
        args.idle, args.scale_rounds = 2, 1
    else:
        args.storm, args.upgrades, args.rounds, args.load, args.load_rounds = 10, 6, 30, 4, 3
        args.idle, args.scale_rounds = 10, 3
    only = {int(x) for x in args.only.split(",") if x}
    for tool in (NGINX, HAPROXY, WRK, GNUPLOT, args.http_server, args.bare_http, args.big_master):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool} is missing (scripts/setup.sh bench installs the tools, "
                     "bench/run.sh builds the programs)")
    # Upgraded masters and daemonized nginx masters are reparented to us.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    t0 = time.monotonic()
    res, sections = {}, []
    for num, title, fn in SCENARIOS:
        if only and num not in only:
            continue
        log(f"{num}. {title}")
        sections.append(f"## {num}. {title}\n\n" + fn(res))
    docs = os.path.dirname(os.path.abspath(args.out))
    plot(res, docs)
    took = time.monotonic() - t0

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    head = f"""# Benchmarks

Written by `bench/run.sh`{" --quick (a smoke run: few rounds, short loads)" if args.quick else ""}
on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}: every figure below was measured in that
one run on one machine ({os.cpu_count()} CPUs, {cpu}, Linux {platform.release()}), procmodel's
`http_server` (examples/http, release build) beside {version("nginx", [NGINX, "-v"])},
{version("HAProxy", [HAPROXY, "-v"])} and the same handler without procmodel; load
from {version("wrk", [WRK, "-v"])}. The scenarios took {took / 60:.1f} minutes. Figures are ratios
procmodel/peer (below 1 is procmodel faster or smaller) or counts; the absolute
times are this machine's and only the ratios travel. The machine may be shared:
load from elsewhere shows as noise, the same for every server of a round.

"""
    notes = os.path.join(ROOT, "bench", "analysis.md")
    tail = open(notes).read() if os.path.exists(notes) else ""
    with open(args.out, "w") as f:
        f.write(head + summary(res) + "\n".join(sections) + "\n" + tail)
    log(f"wrote {args.out} in {took:.0f} s")


if __name__ == "__main__":
    main()
