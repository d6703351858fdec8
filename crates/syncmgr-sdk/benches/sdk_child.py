"""The Python children of `benches/sdk.rs` (see there and docs/performance.md).

    python3 sdk_child.py raw|sdk flood|threads|rtt|relay N W

`sdk`: a handler on sdk/python/syncmgr_handler.py (on PYTHONPATH) whose
sync_item reports N times. `raw`: the same workload written by hand on raw
NDJSON, with the lifecycle answered by hand. Modes:

- `flood`: one thread, W reports in flight. SDK: `progress.post` N times
  (its window is POST_WINDOW, 8), then `progress.flush()`. Raw: one thread
  writes a request while fewer than W are in flight, otherwise reads a reply.
- `threads`: W threads at once. SDK: each calls `progress.report`. Raw: a
  writer thread keeps W requests in flight while the main thread reads.
- `rtt`: one report after the other, each timed.
- `relay`: `threads` with one request in flight (a round trip through a
  reader thread).

All print `BENCH n=.. elapsed_us=.. p50_us=.. p99_us=..` to stderr at the end.
"""

import json
import math
import sys
import threading
import time


def bench_line(n, elapsed, samples):
    samples.sort()

    def q(p):
        if not samples:
            return 0.0
        return samples[min(max(math.ceil(p * len(samples)), 1), len(samples)) - 1]

    sys.stderr.write("BENCH n=%d elapsed_us=%.0f p50_us=%.2f p99_us=%.2f\n"
                     % (n, elapsed * 1e6, q(0.5), q(0.99)))
    sys.stderr.flush()


def sdk(mode, n, window):
    from syncmgr_handler import POST_WINDOW, SUCCEEDED, Handler, Item, serve

    if mode == "flood" and window != POST_WINDOW:
        raise SystemExit("flood: W must be the SDK's POST_WINDOW, %d" % POST_WINDOW)

    class Bench(Handler):
        name = "SDK bench"

        def items(self):
            return [Item("a", "A")]

        def sync_item(self, item, progress):
            if mode == "flood":
                start = time.perf_counter()
                for i in range(1, n + 1):
                    progress.post(value=i, max=n)
                progress.flush()
                bench_line(n, time.perf_counter() - start, [])
            elif mode == "threads":
                def worker(t):
                    for i in range(t, n, window):
                        progress.report(value=i + 1, max=n)
                threads = [threading.Thread(target=worker, args=(t,)) for t in range(window)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                bench_line(n, time.perf_counter() - start, [])
            else:
                samples = []
                clock = time.perf_counter
                start = clock()
                for i in range(1, n + 1):
                    t = clock()
                    progress.report(value=i, max=n)
                    samples.append((clock() - t) * 1e6)
                bench_line(n, clock() - start, samples)
            return SUCCEEDED

    serve(Bench())


def raw(mode, n, window):
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    out_lock = threading.Lock()

    def send(obj):
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with out_lock:
            out.write(line)
            out.flush()

    def request(rid, i):
        return {"jsonrpc": "2.0", "id": rid, "method": "progress",
                "params": {"item": "a", "value": i, "max": n}}

    def read_reply():
        line = inp.readline()
        if not line:
            raise SystemExit("end of input during the run")
        msg = json.loads(line)
        if msg.get("result", {}).get("action") != "continue":
            raise SystemExit("unexpected reply %r" % line)

    def run_flood():
        start = time.perf_counter()
        sent = received = 0
        while received < n:
            if sent < n and sent - received < window:
                sent += 1
                send(request(1000000 + sent, sent))
            else:
                read_reply()
                received += 1
        bench_line(n, time.perf_counter() - start, [])

    def run_threads():
        credit = threading.Semaphore(window)

        def writer():
            for i in range(1, n + 1):
                credit.acquire()
                send(request(1000000 + i, i))

        start = time.perf_counter()
        w = threading.Thread(target=writer)
        w.start()
        for _ in range(n):
            read_reply()
            credit.release()
        w.join()
        bench_line(n, time.perf_counter() - start, [])

    def run_rtt():
        samples = []
        clock = time.perf_counter
        start = clock()
        for i in range(1, n + 1):
            t = clock()
            send(request(1000000 + i, i))
            read_reply()
            samples.append((clock() - t) * 1e6)
        bench_line(n, clock() - start, samples)

    results = {
        "initialize": {"participate": True},
        "getHandlerInfo": {"name": "raw bench", "flags": {}},
        "enumItems": {"items": [{"id": "a", "name": "A"}], "complete": True},
    }
    while True:
        line = inp.readline()
        if not line:
            return
        msg = json.loads(line)
        method = msg.get("method")
        if "id" not in msg:
            if method == "shutdown":
                return
            continue
        if method == "synchronize":
            {"flood": run_flood, "threads": run_threads, "rtt": run_rtt}[mode]()
        send({"jsonrpc": "2.0", "id": msg["id"], "result": results.get(method, {})})


def main():
    side, mode, n, window = sys.argv[1:5]
    if mode not in ("flood", "threads", "rtt", "relay"):
        raise SystemExit("usage: sdk_child.py raw|sdk flood|threads|rtt|relay N W")
    window = int(window)
    if mode == "relay":
        # `threads` with one request in flight: a round trip through another
        # thread (the raw side's reader).
        mode, window = "threads", 1
    (sdk if side == "sdk" else raw)(mode, int(n), window)


if __name__ == "__main__":
    main()
