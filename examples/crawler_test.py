#!/usr/bin/env python3
"""Smoke test of crawler against a local server on 127.0.0.1 only.

20 good URLs, one 404, one that answers after 5 s (the crawler's timeout is
1 s) and one refused connection: expects "total 23, success 20,
failed 3" and exit status 1 (some failed).

usage: crawler_test.py PROGRAM
"""
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(5)
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        body = ("page %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % srv.server_address[1]
    # A port nobody listens on: bind one, then close it.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    refused = "http://127.0.0.1:%d/" % s.getsockname()[1]
    s.close()
    urls = ["%s/ok/%d" % (base, i) for i in range(20)]
    urls += [base + "/missing", base + "/slow", refused]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(urls) + "\n")
    try:
        # No proxy: every request goes straight to 127.0.0.1.
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy")}
        env["no_proxy"] = env["NO_PROXY"] = "*"
        p = subprocess.run([sys.argv[1], f.name, "4", "1000"], env=env,
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
        srv.shutdown()
    print(p.stdout + p.stderr)
    if p.returncode != 1:
        sys.exit("FAIL: exit status %d, expected 1" % p.returncode)
    # Exit status 1 is also what a sanitizer reports: make sure it was ours.
    if "Sanitizer" in p.stderr or "runtime error" in p.stderr:
        sys.exit("FAIL: sanitizer report")
    if "total 23, success 20, failed 3, not started 0," not in p.stdout:
        sys.exit("FAIL: statistics")
    for what in ("/missing: HTTP 404", "/slow: Timeout", refused + ": "):
        if what not in p.stdout:
            sys.exit("FAIL: no failure line with %r" % what)
    print("ok: 20 fetched, 3 failures reported")


if __name__ == "__main__":
    main()
