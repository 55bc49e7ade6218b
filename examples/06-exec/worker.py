#!/usr/bin/env python3
"""An HTTP/1.1 worker for procmodel's exec_spawner, standard library only.

It serves on the sockets it inherits the systemd way (LISTEN_FDS from
descriptor 3), reports to the master with sd_notify datagrams (READY=1,
WATCHDOG=1, STATUS=..., STOPPING=1), drains on SIGQUIT (finishes what is in
flight, answers the last request of each keep-alive connection with
"Connection: close", closes idle ones), exits on SIGTERM, and reopens its
access log on SIGUSR1.

    worker.py [--log PATH] [--message TEXT]

GET /            answers "MESSAGE slot S generation G pid P"
GET /sleep?ms=N  the same, N milliseconds later (an in-flight request)
"""

import errno
import os
import selectors
import signal
import socket
import sys
import time

IDLE_GRACE = 0.5  # a draining worker closes a connection idle this long (seconds)


def sd_notify(state):
    """Sends one datagram to $NOTIFY_SOCKET; False without one."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(state.encode(), path)
        except OSError:
            return False
    return True


def inherited_listeners():
    """The sockets passed as systemd does: LISTEN_FDS from 3, if LISTEN_PID is us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    out = []
    for fd in range(3, 3 + count):
        os.set_inheritable(fd, False)
        s = socket.socket(fileno=fd)
        s.setblocking(False)
        out.append(s)
    return out


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.busy = False  # a request is being answered (received, or waiting out /sleep)
        self.due = None  # when a delayed answer goes out
        self.answer = b""
        self.close_after = False
        self.idle_since = time.monotonic()


class Worker:
    def __init__(self, args):
        self.message = "hello from python"
        self.log_path = None
        it = iter(args)
        for a in it:
            if a == "--log":
                self.log_path = next(it)
            elif a == "--message":
                self.message = next(it)
            else:
                sys.exit(f"worker.py: unknown argument {a!r}")
        self.slot = os.environ.get("PROCMODEL_SLOT", "?")
        self.generation = os.environ.get("PROCMODEL_GENERATION", "?")
        self.sel = selectors.DefaultSelector()
        self.listeners = inherited_listeners()
        self.conns = {}
        self.draining = False
        self.served = 0
        self.log = None
        self.reopen_log()
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        wpid = os.environ.get("WATCHDOG_PID")
        self.watchdog = usec / 3e6 if usec and (not wpid or wpid == str(os.getpid())) else None
        self.next_ping = time.monotonic()
        # Signals wake the loop through a socket; the handlers only note them.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self.pending = set()
        for signo in (signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signo, lambda s, f: self.pending.add(s))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides what ^C means
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        for l in self.listeners:
            self.sel.register(l, selectors.EVENT_READ, "listener")

    def reopen_log(self):
        if self.log:
            self.log.close()
            self.log = None
        if self.log_path:
            self.log = open(self.log_path, "a", buffering=1)

    def note(self, text):
        print(f"worker.py {os.getpid()}: {text}", file=sys.stderr, flush=True)

    # --- connections ---

    def accept_all(self, listener):
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Connection(sock)
            self.conns[sock.fileno()] = c
            self.sel.register(sock, selectors.EVENT_READ, c)

    def close(self, c):
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        self.conns.pop(c.sock.fileno(), None)
        c.sock.close()

    def readable(self, c):
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close(c)
        if not data:
            return self.close(c)
        c.inbuf += data
        self.next_request(c)

    def next_request(self, c):
        if c.busy:
            return
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.inbuf) > 65536:
                self.close(c)
            return
        head = c.inbuf[:end].decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(c.inbuf) < end + 4 + length:
            return
        c.inbuf = c.inbuf[end + 4 + length:]
        parts = lines[0].split(" ")
        target = parts[1] if len(parts) > 1 else "/"
        version = parts[2] if len(parts) > 2 else "HTTP/1.0"
        conn_hdr = headers.get("connection", "").lower()
        c.close_after = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
        c.busy = True
        delay = 0.0
        if target.startswith("/sleep"):
            _, _, query = target.partition("?")
            for kv in query.split("&"):
                k, _, v = kv.partition("=")
                if k == "ms" and v.isdigit():
                    delay = int(v) / 1000.0
        body = f"{self.message} slot {self.slot} generation {self.generation} pid {os.getpid()}\n"
        c.answer = body.encode()
        c.due = time.monotonic() + delay
        if self.log:
            self.log.write(f"{time.time():.3f} {os.getpid()} {lines[0]}\n")

    def respond_due(self):
        now = time.monotonic()
        for c in list(self.conns.values()):
            if c.busy and c.due is not None and c.due <= now:
                c.due = None
                # The last answer of a draining worker closes the connection.
                close = c.close_after or self.draining
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(c.answer)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                )
                c.outbuf += head.encode() + c.answer
                c.close_after = close
                self.served += 1
                self.flush(c)

    def flush(self, c):
        try:
            n = c.sock.send(c.outbuf)
            c.outbuf = c.outbuf[n:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return self.close(c)
        if c.outbuf:
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            return
        self.sel.modify(c.sock, selectors.EVENT_READ, c)
        c.busy = False
        c.idle_since = time.monotonic()
        if c.close_after:
            return self.close(c)
        self.next_request(c)

    # --- the master's commands ---

    def on_signals(self):
        try:
            while self.wake_r.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        pending, self.pending = self.pending, set()
        if signal.SIGTERM in pending:
            self.note("SIGTERM: exiting now")
            sys.exit(0)
        if signal.SIGUSR1 in pending:
            self.reopen_log()
            self.note("SIGUSR1: log reopened")
        if signal.SIGQUIT in pending and not self.draining:
            self.drain()

    def drain(self):
        self.draining = True
        sd_notify("STOPPING=1")
        # What the kernel queued is ours to answer; then the listeners go.
        for l in self.listeners:
            self.accept_all(l)
            self.sel.unregister(l)
            l.close()
        self.listeners = []
        self.note(f"draining {len(self.conns)} connection(s)")

    def close_idle(self):
        now = time.monotonic()
        for c in list(self.conns.values()):
            if not c.busy and not c.inbuf and now - c.idle_since >= IDLE_GRACE:
                self.close(c)

    def run(self):
        if not self.listeners:
            self.note("no socket inherited (LISTEN_FDS); nothing to serve")
        sd_notify(f"READY=1\nSTATUS=serving on {len(self.listeners)} socket(s)")
        last_status = 0
        while True:
            now = time.monotonic()
            if self.watchdog and now >= self.next_ping:
                sd_notify("WATCHDOG=1")
                self.next_ping = now + self.watchdog
            if self.served - last_status >= 1000:
                last_status = self.served
                sd_notify(f"STATUS={self.served} request(s) served")
            if self.draining:
                self.close_idle()
                if not self.conns:
                    self.note(f"drained; {self.served} request(s) served")
                    return 0
            timeout = 0.1
            due = [c.due for c in self.conns.values() if c.due is not None]
            if due:
                timeout = max(0.0, min(timeout, min(due) - now))
            for key, events in self.sel.select(timeout):
                what = key.data
                if what == "wake":
                    self.on_signals()
                elif what == "listener":
                    if not self.draining:
                        self.accept_all(key.fileobj)
                elif key.fileobj.fileno() in self.conns:
                    if events & selectors.EVENT_WRITE:
                        self.flush(what)
                    if events & selectors.EVENT_READ and what.sock.fileno() in self.conns:
                        self.readable(what)
            self.respond_due()


if __name__ == "__main__":
    sys.exit(Worker(sys.argv[1:]).run())
