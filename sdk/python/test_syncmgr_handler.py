"""Tests of syncmgr_handler's channel against a fake manager (no Rust needed).

    python3 -m unittest discover -s sdk/python -p 'test_*.py'

Each test connects the SDK to a :class:`FakeManager` through two pipes. The
fake manager answers ``progress`` requests by a policy of the test (or holds
them until the test releases them) and counts what is outstanding.
Synchronisation is by polling with a deadline, never by sleeping.
"""

import json
import os
import threading
import time
import unittest

import syncmgr_handler as sdk

#: Upper bound for anything that should happen "at once".
DEADLINE = 5.0
#: How long to watch for something that must not happen.
SETTLE = 0.2


class FakeManager:
    """The manager's end of two pipes; the handler's ends are ``infile``
    (what the manager writes) and ``outfile`` (what the handler writes)."""

    def __init__(self, policy=None):
        to_handler_r, self._to_handler = os.pipe()
        self._from_handler, from_handler_w = os.pipe()
        self.infile = os.fdopen(to_handler_r, "rb")
        self.outfile = os.fdopen(from_handler_w, "wb")
        # policy(params) -> a result to answer at once, or None to hold.
        self.policy = policy or (lambda params: {"action": sdk.CONTINUE})
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self.requests = []  # every request from the handler, in order
        self.answers = {}  # id -> our answer to a request of ours
        self.held = []  # progress requests not answered yet
        self.outstanding = 0  # progress requests sent by the handler, not answered
        self.max_outstanding = 0
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- the handler's side of the pipes, and cleanup

    def close_input(self):
        """End of input for the handler."""
        if self._to_handler is not None:
            os.close(self._to_handler)
            self._to_handler = None

    def close(self):
        """Once the handler is done: closes every end (ours read to the end)."""
        self.close_input()
        for f in (self.infile, self.outfile):
            f.close()
        self._reader.join(DEADLINE)

    # -- writing

    def write(self, message):
        data = (json.dumps(message) + "\n").encode()
        with self._write_lock:
            os.write(self._to_handler, data)

    def request(self, method, params):
        with self._cond:
            self._next_id += 1
            rid = self._next_id
        self.write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid

    def call(self, method, params):
        rid = self.request(method, params)
        return self.wait_for(lambda: self.answers.get(rid), "the answer to " + method)

    def release(self, count=None):
        """Answers ``count`` held requests (all by default), oldest first."""
        with self._cond:
            count = len(self.held) if count is None else count
            batch, self.held = self.held[:count], self.held[count:]
        for message in batch:
            self._answer(message, {"action": sdk.CONTINUE})

    def _answer(self, message, result):
        with self._cond:
            self.outstanding -= 1
        self.write({"jsonrpc": "2.0", "id": message["id"], "result": result})

    # -- reading

    def _read(self):
        with os.fdopen(self._from_handler, "rb") as f:
            for line in f:
                message = json.loads(line)
                if "method" not in message:
                    with self._cond:
                        self.answers[message["id"]] = message
                        self._cond.notify_all()
                    continue
                result = None
                with self._cond:
                    self.requests.append(message)
                    if message["method"] == "progress":
                        self.outstanding += 1
                        self.max_outstanding = max(self.max_outstanding, self.outstanding)
                        result = self.policy(message["params"])
                        if result is None:
                            self.held.append(message)
                    self._cond.notify_all()
                if message["method"] == "progress" and result is not None:
                    self._answer(message, result)

    def wait_for(self, predicate, what, timeout=DEADLINE):
        """Waits until ``predicate()`` is truthy (under our lock); returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s" % what)
                self._cond.wait(left)

    def progress(self):
        """The params of every progress request so far."""
        with self._cond:
            return [m["params"] for m in self.requests if m["method"] == "progress"]

    def start_sync(self, items):
        """The lifecycle up to ``synchronize`` (sent, not awaited)."""
        self.call("initialize", {"protocolVersion": 1, "event": "manual",
                                 "mayBotherUser": True, "settingsOnly": False,
                                 "cookie": None})
        self.call("enumItems", {})
        self.call("prepareForSync", {"items": items})
        return self.request("synchronize", {})


def poll(predicate, what, timeout=DEADLINE):
    """Polls ``predicate()`` until truthy, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.001)


class ChannelTest(unittest.TestCase):
    """The connection alone, called from several threads."""

    def setUp(self):
        self.manager = FakeManager()
        self.conn = sdk._Connection(self.manager.infile, self.manager.outfile, None)
        self.conn.start()

    def tearDown(self):
        self.manager.close_input()
        poll(lambda: self.conn.closed, "the connection to close")
        self.manager.close()

    def test_answers_reach_their_callers_from_many_threads(self):
        # Each answer carries the value of its request: every caller must
        # get its own, whoever read it.
        self.manager.policy = lambda params: {"action": sdk.CONTINUE, "echo": params["value"]}
        threads, calls = 6, 200
        errors = []

        def caller(t):
            for i in range(calls):
                value = t * 10000 + i
                result = self.conn.call("progress", {"item": "a", "value": value})
                if result["echo"] != value:
                    errors.append((value, result))

        workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(DEADLINE)
        self.assertFalse(any(w.is_alive() for w in workers), "a caller is stuck")
        self.assertEqual(errors, [])
        self.assertEqual(len(self.manager.progress()), threads * calls)

    def test_answers_out_of_order(self):
        # Held answers released newest first: each still reaches its caller.
        self.manager.policy = lambda params: None
        results = {}

        def caller(t):
            results[t] = self.conn.call("progress", {"item": "a", "value": t})

        workers = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
        for w in workers:
            w.start()
        self.manager.wait_for(lambda: len(self.manager.held) == 4, "4 requests")
        for message in reversed(self.manager.held):
            self.manager.write({"jsonrpc": "2.0", "id": message["id"],
                                "result": {"echo": message["params"]["value"]}})
        for w in workers:
            w.join(DEADLINE)
        self.assertEqual(results, {t: {"echo": t} for t in range(4)})

    def test_end_of_input_fails_outstanding_calls(self):
        self.manager.policy = lambda params: None
        outcomes = []

        def caller():
            try:
                self.conn.call("progress", {"item": "a"})
                outcomes.append("answered")
            except sdk.ChannelClosed:
                outcomes.append("closed")

        workers = [threading.Thread(target=caller) for _ in range(3)]
        for w in workers:
            w.start()
        self.manager.wait_for(lambda: len(self.manager.held) == 3, "3 requests")
        self.manager.close_input()
        for w in workers:
            w.join(DEADLINE)
        self.assertEqual(outcomes, ["closed"] * 3)
        self.assertIsNone(self.conn.next_request())
        with self.assertRaises(sdk.ChannelClosed):
            self.conn.call("progress", {"item": "a"})
        progress = sdk.Progress("a", sdk.Manager(self.conn))
        self.assertEqual(progress.post(value=1), sdk.CANCEL_ALL)
        self.assertEqual(progress.flush(), sdk.CANCEL_ALL)

    def test_post_keeps_at_most_the_window_outstanding(self):
        self.manager.policy = lambda params: None
        progress = sdk.Progress("a", sdk.Manager(self.conn))
        total = 2 * sdk.POST_WINDOW
        done = threading.Event()

        def poster():
            for i in range(1, total + 1):
                progress.post(value=i, max=total)
            progress.flush()
            done.set()

        threading.Thread(target=poster, daemon=True).start()
        for sent in range(sdk.POST_WINDOW, total + 1):
            self.manager.wait_for(lambda: len(self.manager.progress()) == sent,
                                  "%d reports" % sent)
            if sent in (sdk.POST_WINDOW, total):
                # Full window: no further report until one is answered.
                time.sleep(SETTLE)
                self.assertEqual(len(self.manager.progress()), sent)
            self.manager.release(1)
        self.manager.release()
        self.assertTrue(done.wait(DEADLINE), "flush() did not return")
        self.assertEqual(self.manager.max_outstanding, sdk.POST_WINDOW)
        self.assertEqual(self.manager.outstanding, 0)
        self.assertEqual([p["value"] for p in self.manager.progress()],
                         list(range(1, total + 1)))


class Sleeper(sdk.Handler):
    """sync_item waits for a cancel (at most 30 s) and records the outcome."""

    def __init__(self):
        self.entered = threading.Event()
        self.woken = threading.Event()
        self.cancelled = None

    def items(self):
        return [sdk.Item("a", "A")]

    def sync_item(self, item, progress):
        self.entered.set()
        self.cancelled = progress.wait_cancelled(30)
        self.woken.set()
        return sdk.STOPPED if self.cancelled else sdk.SUCCEEDED


class Poster(sdk.Handler):
    """sync_item posts 1..10, then waits for a cancel (at most 30 s)."""

    def __init__(self, flush=False):
        self.flush = flush
        self.cancelled = None
        self.state = None

    def items(self):
        return [sdk.Item("a", "A")]

    def sync_item(self, item, progress):
        for value in range(1, 11):
            progress.post(value=value, max=10)
        if self.flush:
            self.state = progress.flush()
        self.cancelled = progress.wait_cancelled(30)
        return sdk.STOPPED


class ServeTest(unittest.TestCase):
    """``serve`` with a handler, driven by the fake manager."""

    def serve(self, handler, policy=None):
        manager = FakeManager(policy)
        thread = threading.Thread(target=sdk.serve,
                                  args=(handler, manager.infile, manager.outfile),
                                  daemon=True)
        thread.start()

        def stop():
            manager.close_input()
            thread.join(DEADLINE)
            self.assertFalse(thread.is_alive(), "serve() did not return at end of input")
            manager.close()

        self.addCleanup(stop)
        return manager

    def statuses(self, manager):
        return [p["status"] for p in manager.progress() if "status" in p]

    def test_set_item_status_wakes_wait_cancelled(self):
        handler = Sleeper()
        manager = self.serve(handler)
        sync = manager.start_sync(["a"])
        self.assertTrue(handler.entered.wait(DEADLINE), "sync_item was not called")
        # The handler now sits in wait_cancelled, calling nothing.
        manager.write({"jsonrpc": "2.0", "method": "setItemStatus",
                       "params": {"item": "a", "status": "skipped"}})
        self.assertTrue(handler.woken.wait(DEADLINE), "wait_cancelled was not woken")
        self.assertTrue(handler.cancelled)
        manager.wait_for(lambda: manager.answers.get(sync), "the synchronize answer")
        self.assertEqual(self.statuses(manager), [sdk.UPDATING, sdk.STOPPED])

    def test_shutdown_reaches_a_quiet_handler(self):
        handler = Sleeper()
        manager = self.serve(handler)
        manager.start_sync(["a"])
        self.assertTrue(handler.entered.wait(DEADLINE), "sync_item was not called")
        manager.write({"jsonrpc": "2.0", "method": "shutdown", "params": {}})
        self.assertTrue(handler.woken.wait(DEADLINE), "wait_cancelled was not woken")
        self.assertTrue(handler.cancelled)

    def test_cancel_item_answer_to_a_post(self):
        handler = Poster()
        cancel_at_3 = lambda params: {"action": sdk.CANCEL_ITEM if params.get("value") == 3
                                      else sdk.CONTINUE}
        manager = self.serve(handler, cancel_at_3)
        sync = manager.start_sync(["a"])
        manager.wait_for(lambda: manager.answers.get(sync), "the synchronize answer")
        self.assertTrue(handler.cancelled)

    def test_flush_returns_the_cancel(self):
        handler = Poster(flush=True)
        cancel_at_10 = lambda params: {"action": sdk.CANCEL_ITEM if params.get("value") == 10
                                       else sdk.CONTINUE}
        manager = self.serve(handler, cancel_at_10)
        sync = manager.start_sync(["a"])
        manager.wait_for(lambda: manager.answers.get(sync), "the synchronize answer")
        self.assertEqual(handler.state, sdk.CANCEL_ITEM)

    def test_synchronize_waits_for_posted_answers(self):
        class PostAndReturn(sdk.Handler):
            def items(self):
                return [sdk.Item("a", "A")]

            def sync_item(self, item, progress):
                for value in range(1, 4):
                    progress.post(value=value, max=3)

        # Posted reports (with a value) are held; the statuses answered.
        manager = self.serve(PostAndReturn(),
                             lambda params: None if "value" in params else {"action": "continue"})
        sync = manager.start_sync(["a"])
        manager.wait_for(lambda: sdk.SUCCEEDED in self.statuses(manager), "succeeded")
        time.sleep(SETTLE)  # the synchronize answer must not come meanwhile
        self.assertNotIn(sync, manager.answers)
        manager.release()
        manager.wait_for(lambda: manager.answers.get(sync), "the synchronize answer")
        self.assertEqual(manager.outstanding, 0)

    def test_terminal_status_by_post_is_kept(self):
        class PostSkipped(sdk.Handler):
            def items(self):
                return [sdk.Item("a", "A")]

            def sync_item(self, item, progress):
                progress.post(status=sdk.SKIPPED, text="nothing to do")

        manager = self.serve(PostSkipped())
        sync = manager.start_sync(["a"])
        manager.wait_for(lambda: manager.answers.get(sync), "the synchronize answer")
        self.assertEqual(self.statuses(manager), [sdk.UPDATING, sdk.SKIPPED])


if __name__ == "__main__":
    unittest.main()
