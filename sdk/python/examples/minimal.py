#!/usr/bin/env python3
"""The smallest useful handler: two items that count to N with progress,
honour cancels, and (with ``--fail ITEM``) fail once with an actionable log
entry that ``syncmgr log show`` turns into a successful retry.

    syncmgr register mini-py -- python3 sdk/python/examples/minimal.py --step-ms 500
    syncmgr sync

Options: ``--steps N`` (default 5), ``--step-ms MS`` (default 100),
``--fail ITEM`` (fail that item until retried).
"""
import argparse
import os
import sys

# syncmgr_handler.py lives one directory up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from syncmgr_handler import STOPPED, Handler, HandlerError, Item, serve  # noqa: E402


class Minimal(Handler):
    name = "Minimal Python example"

    def __init__(self, steps, step_seconds, fail):
        self.steps, self.step_seconds, self.fail = steps, step_seconds, fail
        self.retried = set()  # items show_error asked to retry: they succeed now

    def items(self):
        return [Item("inbox", "Inbox"), Item("outbox", "Outbox")]

    def sync_item(self, item, progress):
        for step in range(1, self.steps + 1):
            # The real work goes here. Waiting stands in for it: it returns
            # True at once when the manager cancels the item.
            if progress.wait_cancelled(self.step_seconds):
                return STOPPED
            text = "step %d of %d" % (step, self.steps)
            if progress.report(value=step, max=self.steps, text=text) != "continue":
                return STOPPED
        if item == self.fail and item not in self.retried:
            # An actionable error entry; `syncmgr log show ID` calls
            # show_error("retry-<item>").
            raise HandlerError("%s: simulated failure" % item,
                               error_id="retry-" + item, actionable=True)
        return None  # succeeded

    def show_error(self, error_id):
        if error_id.startswith("retry-"):
            item = error_id[len("retry-"):]
            self.retried.add(item)
            return [item]
        return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-ms", type=int, default=100)
    parser.add_argument("--fail", metavar="ITEM")
    args = parser.parse_args()
    serve(Minimal(args.steps, args.step_ms / 1000.0, args.fail))


if __name__ == "__main__":
    main()
