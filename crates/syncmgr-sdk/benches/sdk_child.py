"""The Python children of `benches/sdk.rs` (see there and docs/performance.md).

    python3 sdk_child.py raw|sdk flood|rtt N W

`sdk`: a handler on sdk/python/syncmgr_handler.py (on PYTHONPATH) whose
sync_item calls progress.report N times, from W threads (flood) or one after
the other (rtt). `raw`: the same workload written by hand on raw NDJSON, with
the lifecycle answered by hand; a writer keeps W requests in flight while the
main thread reads the replies (flood). Both print
`BENCH n=.. elapsed_us=.. p50_us=.. p99_us=..` to stderr at the end.
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


def sdk(flood, n, window):
    from syncmgr_handler import SUCCEEDED, Handler, Item, serve

    class Bench(Handler):
        name = "SDK bench"

        def items(self):
            return [Item("a", "A")]

        def sync_item(self, item, progress):
            if flood:
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


def raw(flood, n, window):
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
            run_flood() if flood else run_rtt()
        send({"jsonrpc": "2.0", "id": msg["id"], "result": results.get(method, {})})


def main():
    side, mode, n, window = sys.argv[1:5]
    # relay: the raw flood with one request in flight (a round trip through a
    # reader thread, as the SDK does it).
    window = 1 if mode == "relay" else int(window)
    (sdk if side == "sdk" else raw)(mode in ("flood", "relay"), int(n), window)


if __name__ == "__main__":
    main()
