#!/usr/bin/env python3
"""Smoke test of graceful_shutdown, on 127.0.0.1 only.

1. Graceful: a request of 300 ms; SIGTERM while it runs; the response
   arrives (200) and the server reports "graceful: all 1 in-flight requests
   finished".
2. Forced: a request of 5 s, a grace period of 100 ms; SIGINT while it
   runs; the response is a 503 and the server reports "forced: 1 requests
   still running after the grace period", long before the 5 s.

usage: graceful_shutdown_test.py PROGRAM
"""
import signal
import socket
import subprocess
import sys
import time


def fail(msg, out=""):
    print("FAIL: " + msg + "\n--- server output ---\n" + out, file=sys.stderr)
    sys.exit(1)


def run(prog, work_ms, grace_ms, sig):
    srv = subprocess.Popen([prog, "--port", "0", "--work-ms", str(work_ms),
                            "--grace-ms", str(grace_ms)],
                           stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        port = int(srv.stdout.readline())
        cli = socket.create_connection(("127.0.0.1", port), timeout=20)
        cli.sendall(b"GET /slow HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        # Wait until the request is running, then signal.
        while True:
            line = srv.stdout.readline()
            if not line:
                fail("server exited early", "".join(lines))
            lines.append(line)
            if "request /slow started" in line:
                break
        t0 = time.monotonic()
        srv.send_signal(sig)
        resp = b""
        while True:
            chunk = cli.recv(4096)
            if not chunk:
                break
            resp += chunk
        cli.close()
        rest, _ = srv.communicate(timeout=20)
        lines.append(rest)
        return resp.decode(), "".join(lines), srv.returncode, \
            time.monotonic() - t0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def main():
    prog = sys.argv[1]
    resp, out, rc, _ = run(prog, 300, 10000, signal.SIGTERM)
    if rc != 0:
        fail("graceful run exited with %d" % rc, out)
    if not resp.startswith("HTTP/1.0 200"):
        fail("graceful run: response %r" % resp, out)
    if "graceful: all 1 in-flight requests finished" not in out:
        fail("graceful run: no 'graceful' line", out)
    print("ok: graceful\n" + out)

    resp, out, rc, secs = run(prog, 5000, 100, signal.SIGINT)
    if rc != 0:
        fail("forced run exited with %d" % rc, out)
    if not resp.startswith("HTTP/1.0 503"):
        fail("forced run: response %r" % resp, out)
    if "forced: 1 requests still running after the grace period" not in out:
        fail("forced run: no 'forced' line", out)
    if secs > 4:
        fail("forced run took %.1f s: it waited for the request" % secs, out)
    print("ok: forced after %.2f s\n" % secs + out)


if __name__ == "__main__":
    main()
