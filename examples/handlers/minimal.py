#!/usr/bin/env python3
"""A minimal syncmgr handler: two items, five steps each (see docs/protocol.md)."""
import itertools, json, sys, time

ITEMS = {"inbox": "Inbox", "outbox": "Outbox"}
skipped, backlog, ids = set(), [], itertools.count(1)

def send(**msg):
    print(json.dumps({"jsonrpc": "2.0", **msg}), flush=True)

def read():
    """One message from the manager; a setItemStatus is noted and gives None."""
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)                          # EOF: the manager has gone
    msg = json.loads(line)
    if msg.get("method") == "setItemStatus":
        skipped.add(msg["params"]["item"])   # the user stopped this item
        return None
    return msg

def progress(item, **fields):
    """Sends a progress request and returns the manager's action."""
    rid = next(ids)
    send(id=rid, method="progress", params={"item": item, **fields})
    while True:
        msg = read()
        if msg and "method" not in msg and msg.get("id") == rid:
            return msg.get("result", {}).get("action", "continue")
        if msg:
            backlog.append(msg)              # not ours: handle it later

def synchronize(items):
    stop_all = False
    for item in items:
        if stop_all or item in skipped:      # cancelled before it started
            progress(item, status="skipped")
            continue
        print("syncing", item, file=sys.stderr)  # kept as an information entry
        action = progress(item, status="updating", text="starting", value=0, max=5)
        for step in range(1, 6):
            if action != "continue" or item in skipped:
                break
            time.sleep(0.2)                  # the real work goes here
            action = progress(item, value=step, text=f"step {step} of 5")
        stop_all = action == "cancelAll"
        done = action == "continue" and item not in skipped
        progress(item, status="succeeded" if done else "stopped",
                 text="done" if done else "cancelled")

prepared = []
while True:
    msg = backlog.pop(0) if backlog else read()
    if msg is None or "method" not in msg:
        continue                             # a cancel (noted) or a stray response
    method, params = msg["method"], msg.get("params") or {}
    if method == "shutdown":
        sys.exit(0)
    if method == "initialize":
        result = {"participate": True}
    elif method == "getHandlerInfo":
        result = {"name": "Minimal example"}
    elif method == "enumItems":
        result = {"items": [{"id": i, "name": n, "checked": True}
                            for i, n in ITEMS.items()], "complete": True}
    elif method == "prepareForSync":
        prepared, result = params["items"], {}
    elif method == "synchronize":
        synchronize(prepared)
        result = {}
    elif method == "showError":
        result = {"retry": []}
    else:
        send(id=msg.get("id"), error={"code": -32601, "message": "unknown method"})
        continue
    send(id=msg["id"], result=result)
