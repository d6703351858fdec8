#!/usr/bin/env python3
"""The handler of the tutorial in docs/protocol.md: two items, five steps each."""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from syncmgr_handler import CONTINUE, STOPPED, Handler, HandlerError, Item, serve  # noqa: E402

PAUSE = float(os.environ.get("TUTORIAL_PAUSE", "0.2"))  # seconds per step
FAIL = os.environ.get("TUTORIAL_FAIL")                  # an item to fail, to try a retry


class Tutorial(Handler):
    name = "Tutorial"                                   # the handler's display name

    def items(self):                                    # what there is to sync
        return [Item("inbox", "Inbox"), Item("outbox", "Outbox")]

    def sync_item(self, item, progress):                # syncs one item
        print("syncing", item)                          # stderr: an information entry
        for step in range(1, 6):
            if progress.wait_cancelled(PAUSE):          # the real work goes here
                return STOPPED
            if progress.report(value=step, max=5, text=f"step {step} of 5") != CONTINUE:
                return STOPPED
        if item == FAIL:
            raise HandlerError(f"{item}: the server is busy",
                               error_id=f"busy-{item}", actionable=True)
        return None                                     # succeeded

    def show_error(self, error_id):                     # `syncmgr log show ID` on our entry
        return [error_id[len("busy-"):]] if error_id.startswith("busy-") else []


if __name__ == "__main__":
    serve(Tutorial())
