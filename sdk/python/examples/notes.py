#!/usr/bin/env python3
"""A handler that reports conflicts: one item, ``notes``, keeping a local and
a remote copy of a text in step (two files standing in for a device and a
server). When both changed since the last sync, it reports a conflict to the
manager's store instead of choosing; ``syncmgr conflicts resolve`` then
reaches :meth:`Notes.resolve_conflict`.

    syncmgr register notes -- python3 sdk/python/examples/notes.py --dir /tmp/notes
    echo mine > /tmp/notes/local.txt; echo theirs > /tmp/notes/remote.txt
    syncmgr sync notes && syncmgr conflicts
    syncmgr conflicts resolve ID --keep 1 --yes

State in ``--dir``: ``local.txt``, ``remote.txt``, and ``base.txt`` (the
text at the last sync) plus ``conflict.json`` (what an open conflict was
reported with, to refuse a decision on versions that changed since).
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from syncmgr_handler import Handler, HandlerError, Item, serve  # noqa: E402

CONFLICT_ID = "notes-text"
SIDES = ("local", "remote")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write(path, data):
    temp = path + ".tmp"
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def digest(data):
    return None if data is None else hashlib.sha256(data).hexdigest()


class Notes(Handler):
    name = "Notes (conflict example)"

    def __init__(self, folder):
        self.folder = folder

    def path(self, name):
        return os.path.join(self.folder, name)

    def items(self):
        return [Item("notes", "Notes")]

    def version(self, side):
        path = self.path(side + ".txt")
        data = read(path)
        version = {"label": "%s: %s" % (side, path)}
        if data is not None:
            version["size"] = len(data)
            modified = datetime.datetime.fromtimestamp(
                os.stat(path).st_mtime, datetime.timezone.utc)
            version["modified"] = modified.isoformat().replace("+00:00", "Z")
        version["detail"] = "changed" if data is not None else "deleted"
        return version

    def sync_item(self, item, progress):
        progress.report(value=0, max=1, text="comparing")
        base = read(self.path("base.txt"))
        local, remote = read(self.path("local.txt")), read(self.path("remote.txt"))
        state_path = self.path("conflict.json")
        if local == remote:
            if local is not None:
                write(self.path("base.txt"), local)
            if os.path.exists(state_path):
                os.remove(state_path)
                self.manager.conflict_resolved(item, CONFLICT_ID)
        elif local == base:
            write(self.path("local.txt"), remote)
            write(self.path("base.txt"), remote)
        elif remote == base:
            write(self.path("remote.txt"), local)
            write(self.path("base.txt"), local)
        else:
            write(state_path, json.dumps(
                {"local": digest(local), "remote": digest(remote)}).encode())
            self.manager.report_conflict(
                item, CONFLICT_ID, "the notes changed on both sides",
                [self.version(side) for side in SIDES])
        progress.report(value=1, max=1, text="done")
        return None

    def resolve_conflict(self, item, conflict_id, keep, version):
        state = read(self.path("conflict.json"))
        if conflict_id != CONFLICT_ID or state is None:
            raise HandlerError("there is no open conflict %r" % conflict_id)
        recorded = json.loads(state)
        now = {side: read(self.path(side + ".txt")) for side in SIDES}
        if any(digest(now[side]) != recorded[side] for side in SIDES):
            raise HandlerError("stale: the notes changed since the conflict was "
                               "reported; sync again first")
        if keep == "one":
            if version >= len(SIDES):
                raise HandlerError("there is no version %d" % version)
            winner = now[SIDES[version]]
        else:
            # Keep all: both texts, one after the other.
            winner = (now["local"] or b"") + b"\n" + (now["remote"] or b"")
        for side in SIDES:
            write(self.path(side + ".txt"), winner)
        write(self.path("base.txt"), winner)
        os.remove(self.path("conflict.json"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    serve(Notes(args.dir))


if __name__ == "__main__":
    main()
