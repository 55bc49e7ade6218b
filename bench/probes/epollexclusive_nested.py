#!/usr/bin/env python3
"""Does EPOLLEXCLUSIVE still wake one waiter when the epoll descriptor that
holds the listener is itself watched by another epoll (as a private epoll
inside an Asio loop would be)? Four forked processes wait on one listening
socket; five connections arrive one at a time; each process counts its
wake-ups. bench/analysis.md ("Balance on a shared listener") cites the result.

    python3 bench/probes/epollexclusive_nested.py
"""
import os
import select
import socket
import time

PROCESSES, CONNECTIONS = 4, 5


def wakeups(nested):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    r, w = os.pipe()
    kids = []
    for _ in range(PROCESSES):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            inner = select.epoll()
            inner.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            waiter = inner
            if nested:
                waiter = select.epoll()
                waiter.register(inner.fileno(), select.EPOLLIN)
            woken, deadline = 0, time.monotonic() + 0.3 + CONNECTIONS * 0.2 + 0.5
            while time.monotonic() < deadline:
                if waiter.poll(0.1):
                    woken += 1
                    time.sleep(0.05)  # the others would wake meanwhile, if woken
                    try:
                        listener.accept()[0].close()
                    except BlockingIOError:
                        pass
            os.write(w, f"{woken}\n".encode())
            os._exit(0)
        kids.append(pid)
    os.close(w)
    time.sleep(0.3)
    for _ in range(CONNECTIONS):
        socket.create_connection(listener.getsockname()).close()
        time.sleep(0.2)
    for pid in kids:
        os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        return sum(int(line) for line in f)


if __name__ == "__main__":
    for nested in (False, True):
        total = wakeups(nested)
        print(f"{'nested' if nested else 'flat  '}: {total} wake-ups for {CONNECTIONS} "
              f"connections among {PROCESSES} processes ({total / CONNECTIONS:.1f} per connection)")
