#!/usr/bin/env python3
"""A small but real sync handler: mirrors folders one way, with byte progress.

Usage (as a registered handler):

    syncmgr register photos -- python3 mirror.py SRC1:DST1 [SRC2:DST2 ...]

Each SRC:DST pair is one item (its id is the source folder's base name). A sync
copies every new or changed file (by size and modification time) from SRC to
DST, reporting progress in bytes, and honours cancellation between chunks: a
`cancelItem`/`cancelAll` reply to a progress request, or a `setItemStatus`
notification. Files are written to a temporary name and renamed, so a cancel
never leaves a partial file under its final name.

It speaks syncmgr's handler protocol (docs/protocol.md): newline-delimited
JSON-RPC 2.0 on stdin/stdout. Standard library only; Python 3.8+.
"""

import json
import os
import shutil
import sys
import threading
import queue

CHUNK = 256 * 1024


class Channel:
    """Both directions of the protocol: our requests and the manager's."""

    def __init__(self):
        self.next_id = 1
        self.replies = {}
        self.incoming = queue.Queue()
        self.skipped = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "method" not in msg:
                with self.lock:
                    slot = self.replies.get(msg.get("id"))
                if slot is not None:
                    slot.put(msg)
            elif msg["method"] == "setItemStatus":
                self.skipped.add(msg["params"]["item"])
            else:
                self.incoming.put(msg)
        self.incoming.put(None)  # stdin closed: the manager is gone

    def send(self, msg):
        msg["jsonrpc"] = "2.0"
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def request(self, method, params):
        slot = queue.Queue(maxsize=1)
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            self.replies[rid] = slot
        self.send({"id": rid, "method": method, "params": params})
        reply = slot.get()
        with self.lock:
            del self.replies[rid]
        if "error" in reply:
            raise RuntimeError(reply["error"]["message"])
        return reply["result"]

    def progress(self, item, **fields):
        """Reports progress; returns True while the item should go on."""
        fields["item"] = item
        action = self.request("progress", fields)["action"]
        return action == "continue" and item not in self.skipped


def plan(src, dst):
    """The files to copy: (relative path, size), new or changed only."""
    todo = []
    for root, _dirs, files in os.walk(src):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            st = os.stat(path)
            try:
                dt = os.stat(os.path.join(dst, rel))
                if dt.st_size == st.st_size and int(dt.st_mtime) == int(st.st_mtime):
                    continue
            except FileNotFoundError:
                pass
            todo.append((rel, st.st_size))
    return todo


def mirror(chan, item, src, dst):
    if not os.path.isdir(src):
        chan.request("logError", {"level": "error", "item": item,
                                  "text": "source folder %s is missing" % src})
        chan.progress(item, status="failed", text="source missing")
        return
    todo = plan(src, dst)
    total = sum(size for _, size in todo)
    done = 0
    if not chan.progress(item, status="updating", text="%d files to copy" % len(todo),
                         value=0, max=total):
        chan.progress(item, status="stopped", text="cancelled")
        return
    for rel, _size in todo:
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = target + ".syncmgr-partial"
        with open(os.path.join(src, rel), "rb") as fin, open(partial, "wb") as fout:
            while True:
                chunk = fin.read(CHUNK)
                if not chunk:
                    break
                fout.write(chunk)
                done += len(chunk)
                if not chan.progress(item, value=done, text=rel):
                    fout.close()
                    os.unlink(partial)
                    chan.progress(item, status="stopped", text="cancelled at " + rel)
                    return
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(os.path.join(src, rel), partial)
        os.replace(partial, target)
    chan.progress(item, status="succeeded", value=total,
                  text="%d files, %d bytes copied" % (len(todo), total))


def main():
    pairs = {}
    for arg in sys.argv[1:]:
        src, sep, dst = arg.partition(":")
        if not sep:
            sys.exit("usage: mirror.py SRC:DST [SRC:DST ...]")
        pairs[os.path.basename(os.path.normpath(src))] = (src, dst)
    chan = Channel()
    prepared = []
    while True:
        msg = chan.incoming.get()
        if msg is None:
            return
        method, rid = msg["method"], msg.get("id")
        params = msg.get("params") or {}
        if method == "shutdown":
            return
        if method == "initialize":
            result = {"participate": True}
        elif method == "getHandlerInfo":
            result = {"name": "Folder mirror (example)"}
        elif method == "enumItems":
            result = {"complete": True, "items": [
                {"id": item, "name": "%s -> %s" % pair, "checked": True}
                for item, pair in pairs.items()]}
        elif method == "prepareForSync":
            prepared = params["items"]
            result = {}
        elif method == "synchronize":
            # Answered only when every prepared item is done.
            for item in prepared:
                if item in chan.skipped:
                    chan.progress(item, status="skipped")
                else:
                    mirror(chan, item, *pairs[item])
            result = {}
        elif method == "showError":
            result = {"retry": []}
        else:
            chan.send({"id": rid, "error": {"code": -32601, "message": "no " + method}})
            continue
        if rid is not None:
            chan.send({"id": rid, "result": result})


if __name__ == "__main__":
    main()
