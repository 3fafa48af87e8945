#!/usr/bin/env python3
"""End-to-end: the HTTP side of `tpipe serve` on a loopback port: error codes
(400 bad JSON / bad parameter / malformed HTTP, 404, 405 with Allow, 413 by
Content-Length and by a chunked body, 414, 431, 503 with Retry-After on a full
queue, 504 past the deadline), keep-alive, pipelined requests answered in order,
slow headers closed after the header timeout, a client that disconnects cancels its
request, the config file, and SIGTERM draining a request in flight.

usage: e2e_http.py BUILD_DIR TEST_DATA_DIR SOURCE_DIR"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from e2elib import Server, args, check, finish, read_responses

tpipe, FIX, SRC = args()
SST2 = os.path.join(FIX, "distilbert-sst2")
GPT2 = os.path.join(FIX, "gpt2")
LONG_GEN = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 100, "do_sample": False}}

srv = Server(tpipe, [("sst2", "text-classification", SST2), ("gpt2", "text-generation", GPT2)],
             ["--max-body-bytes", "4096", "--header-timeout-ms", "800", "--max-headers", "20",
              "--max-header-bytes", "2048"])
try:
    # ---- errors
    s, h, b = srv.request("POST", "/models/sst2", '{"inputs": "x",')
    check(s == 400 and "invalid JSON at line 1" in json.loads(b)["error"], "bad JSON: 400 naming the position", b)
    s, h, b = srv.request("POST", "/models/sst2", {"inputs": "good", "parameters": {"top_k": "x"}})
    check(s == 400 and "top_k" in json.loads(b)["error"], "bad parameter: 400 naming it", b)
    s, h, b = srv.request("POST", "/models/sst2", {"parameters": {}})
    check(s == 400 and "inputs" in json.loads(b)["error"], "no inputs: 400", b)
    s, h, b = srv.request("POST", "/models/sst2", "[1]")
    check(s == 400, "a body that is not an object: 400", b)
    s, h, b = srv.request("POST", "/models/nope", {"inputs": "x"})
    check(s == 404 and "nope" in json.loads(b)["error"], "unknown pipeline: 404", b)
    s, h, b = srv.request("GET", "/no/such/path")
    check(s == 404, "unknown path: 404", b)
    s, h, b = srv.request("GET", "/models/sst2")
    check(s == 405 and h.get("allow") == "POST", "GET on /models/NAME: 405, Allow: POST", (s, h))
    s, h, b = srv.request("DELETE", "/health")
    check(s == 405 and h.get("allow") == "GET", "DELETE /health: 405, Allow: GET", (s, h))
    out = srv.raw(b"POST /models/sst2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in out,
          "Content-Length over --max-body-bytes: 413 before the body, then close", out[:200])
    chunked = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(6))
    out = srv.raw(b"POST /models/sst2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    check(out.startswith(b"HTTP/1.1 413 "), "chunked body over the limit: 413", out[:200])
    out = srv.raw(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 414 "), "URL over --max-header-bytes: 414", out[:100])
    out = srv.raw(b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(30)) + b"\r\n")
    check(out.startswith(b"HTTP/1.1 431 "), "more headers than --max-headers: 431", out[:100])
    out = srv.raw(b"GET /health HTTP/1.1\r\nX: " + b"y" * 3000 + b"\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 431 "), "headers over --max-header-bytes: 431", out[:100])
    out = srv.raw(b"BLAH\x00\x01 / HTTP/1.1\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in out, "malformed request line: 400",
          out[:200])

    # ---- keep-alive: several requests, one connection
    c = srv.conn()
    statuses = []
    for text in ["I love it", "I hate it", "fine"]:
        c.request("POST", "/models/sst2", body=json.dumps({"inputs": text}))
        r = c.getresponse()
        r.read()
        statuses.append((r.status, r.getheader("Connection")))
    c.request("GET", "/health")
    r = c.getresponse()
    statuses.append((r.status, r.getheader("Connection")))
    r.read()
    c.close()
    check(statuses == [(200, "keep-alive")] * 4, "keep-alive: four requests on one connection", statuses)

    # ---- pipelining: three requests in one write, answered in order
    single = {t: srv.request("POST", "/models/sst2", {"inputs": t})[2] for t in ["good movie", "bad movie"]}
    bodies = [json.dumps({"inputs": t}).encode() for t in ["good movie", "bad movie"]]
    wire = (b"POST /models/sst2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(bodies[0]), bodies[0]) +
            b"GET /health HTTP/1.1\r\n\r\n" +
            b"POST /models/sst2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(bodies[1]), bodies[1]) +
            b"GET /nope HTTP/1.1\r\n\r\n")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(wire)
    resp = read_responses(sock, 4)
    sock.close()
    check([r[0] for r in resp] == [200, 200, 200, 404] and resp[0][2] == single["good movie"] and
          resp[1][2] == b'{"status": "ok"}\n' and resp[2][2] == single["bad movie"],
          "pipelining: four requests in one write, answered in order", resp)

    # ---- slow headers (slowloris): closed after --header-timeout-ms
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    t0 = time.time()
    closed = False
    try:
        for i in range(40):
            time.sleep(0.1)
            sock.sendall(b"X-%d: y\r\n" % i)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        sock.settimeout(3)
        try:
            closed = sock.recv(100) == b""
        except (ConnectionResetError, socket.timeout):
            closed = True
    sock.close()
    check(closed and time.time() - t0 < 3.5, "trickled headers: closed after the header timeout",
          f"closed={closed} after {time.time() - t0:.1f}s")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.settimeout(3)
    t0 = time.time()
    try:
        idle_closed = sock.recv(10) == b""
    except (ConnectionResetError, socket.timeout):
        idle_closed = False
    sock.close()
    check(idle_closed and time.time() - t0 < 2.5, "a silent new connection is closed after the header timeout")

    # ---- disconnect cancels the request in flight
    before = srv.metric("tpipe_pipeline_requests_total", pipeline="gpt2", outcome="cancelled") or 0
    # beams make it several times longer than LONG_GEN (tens of ms on a fast machine): the
    # client goes away while it runs, and the request ends cancelled either way
    body = json.dumps({"inputs": LONG_GEN["inputs"],
                       "parameters": dict(LONG_GEN["parameters"], num_beams=8)}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /models/gpt2 HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.005)
    sock.close()
    cancelled = before
    for _ in range(100):
        cancelled = srv.metric("tpipe_pipeline_requests_total", pipeline="gpt2", outcome="cancelled") or 0
        if cancelled > before:
            break
        time.sleep(0.1)
    check(cancelled > before, "a client that disconnects cancels its request", f"{before} -> {cancelled}")
    s, h, b = srv.request("GET", "/health")
    check(s == 200, "the server still answers after the cancelled request")
finally:
    rc = srv.stop()
check(rc == 0, "SIGTERM with nothing in flight: exit 0", rc)

# ---- 503 on a full queue, 504 past the deadline; a config file
tmp = tempfile.mkdtemp(prefix="tpipe-e2e.")
conf = os.path.join(tmp, "serve.json")
with open(conf, "w") as f:
    json.dump({"workers": 1, "max_queue": 1, "timeout_ms": 60000,
               "pipelines": [{"name": "gpt2", "task": "text-generation", "model": GPT2}]}, f)
srv = Server(tpipe, [], ["--config", conf])
try:
    results = []
    lock = threading.Lock()

    # eight beams keep the first request running for tens of ms even on a fast machine;
    # the other four arrive together while it runs: one waits in the queue, three get 503
    slow = dict(LONG_GEN, parameters=dict(LONG_GEN["parameters"], num_beams=8))

    def fire():
        r = srv.request("POST", "/models/gpt2", slow)
        with lock:
            results.append(r)
    threads = [threading.Thread(target=fire) for _ in range(5)]
    threads[0].start()
    time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r[0] for r in results)
    busy = [r for r in results if r[0] == 503]
    check(200 in codes and busy and all(r[1].get("retry-after") == "1" for r in busy),
          "--max-queue 1 (from the config file): 503 with Retry-After: 1 when full", codes)
finally:
    srv.stop()
# 1 ms: the generation of 100 tokens takes longer even on the fastest machine
srv = Server(tpipe, [("gpt2", "text-generation", GPT2)], ["--timeout-ms", "1"])
try:
    s, h, b = srv.request("POST", "/models/gpt2", LONG_GEN)
    check(s == 504 and "error" in json.loads(b), "--timeout-ms passed: 504", (s, b))
finally:
    srv.stop()

# ---- SIGTERM drains the request in flight, then exits 0
srv = Server(tpipe, [("gpt2", "text-generation", GPT2)])
got = {}


def slow():
    got["r"] = srv.request("POST", "/models/gpt2", LONG_GEN)


t = threading.Thread(target=slow)
t.start()
time.sleep(0.5)
srv.proc.send_signal(signal.SIGTERM)
t.join(60)
try:
    rc = srv.proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    srv.proc.kill()
    rc = None
r = got.get("r")
check(r is not None and r[0] == 200 and json.loads(r[2])[0]["generated_text"].startswith("Once upon a time"),
      "SIGTERM: the request in flight is answered", r and r[:2])
check(rc == 0, "SIGTERM: then exit 0", rc)
refused = False
try:
    socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
except OSError:
    refused = True
check(refused, "after exiting nothing listens on the port")
finish()
