"""Write syncmgr sync handlers in Python.

One file, standard library only, Python 3.8 or newer. Copy it next to your
handler (or put its directory on ``PYTHONPATH``), subclass :class:`Handler`
and call :func:`serve`::

    import time
    from syncmgr_handler import CONTINUE, STOPPED, SUCCEEDED, Handler, Item, serve

    class Notes(Handler):
        name = "Notes"

        def items(self):
            return [Item("work", "Work notes"), Item("home", "Home notes")]

        def sync_item(self, item, progress):
            for step in range(1, 11):
                time.sleep(0.1)                      # the real work
                if progress.report(value=step, max=10, text=f"{step} of 10") != CONTINUE:
                    return STOPPED                   # the manager said stop
            return SUCCEEDED

    if __name__ == "__main__":
        serve(Notes())

Register it with ``syncmgr register notes -- python3 /path/to/notes.py`` and
run ``syncmgr sync``.

The manager starts the handler for each session and talks to it over stdin
and stdout in newline-delimited JSON-RPC 2.0 (``docs/protocol.md``). This
module does all of that: framing, requests in both directions at once
(``report`` may be called from any number of threads), cancellation,
the statuses around each item, and the shutdown.

Reporting fast
--------------
:meth:`Progress.report` waits for the manager's answer, a round trip per
report. :meth:`Progress.post` sends the same report and returns at once
with the cancel state known so far; up to :data:`POST_WINDOW` posted
reports await their answer at a time, and their cancels are applied as the
answers arrive. Use ``report`` when you act on each answer (a report every
step, every second); use ``post`` for many small reports in a row (a
counter per file or per chunk), then :meth:`Progress.flush` when you need
every answer in.

Cancellation
------------
The manager stops an item two ways: the answer to a progress report and a
``setItemStatus`` notification (which may arrive while the handler is not
reporting at all). Both are folded into the item's cancel state.

*Cancellation is returned, not raised*: :meth:`Progress.report` returns the
manager's answer, :data:`CONTINUE`, :data:`CANCEL_ITEM` or :data:`CANCEL_ALL`,
and never raises because of a cancel. :attr:`Progress.cancelled` reads the
state without sending anything, :meth:`Progress.wait_cancelled` waits for it
(use it instead of ``time.sleep``). If you would rather unwind with an
exception, call :meth:`Progress.check`, which raises :class:`Cancelled`.

``sync_item`` then returns :data:`STOPPED`, or raises :class:`Cancelled`,
or raises anything else: once the item is cancelled every exception ends it
``stopped``, not ``failed``. Items that had not started are reported
``skipped`` without calling ``sync_item``.

Output
------
Never print protocol yourself. :func:`serve` keeps private copies of stdin
and stdout for the protocol, then points file descriptor 1 at stderr and
descriptor 0 at ``/dev/null``: ``print()``, libraries and child processes
write to stderr, which the manager keeps as information entries of the
session's log.
"""

from __future__ import annotations

import collections
import datetime
import io
import itertools
import json
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Handler", "Item", "Progress", "Manager", "Context",
    "HandlerError", "Cancelled", "ManagerError", "ChannelClosed",
    "serve",
    "CONTINUE", "CANCEL_ITEM", "CANCEL_ALL",
    "SUCCEEDED", "FAILED", "STOPPED", "SKIPPED", "UPDATING", "UPDATING_INDETERMINATE",
    "INFORMATION", "WARNING", "ERROR",
]

PROTOCOL_VERSION = 1
#: Longest line either side may send, in bytes without the newline.
MAX_LINE = 1 << 20
#: Longest status or log text the manager accepts, in bytes.
MAX_TEXT = 4096
#: How long the process may take to wind down once the manager closed the
#: channel, before :func:`serve` ends it (seconds).
EXIT_GRACE = 3.0

# The manager's answers to a progress report.
CONTINUE = "continue"        #: go on
CANCEL_ITEM = "cancelItem"   #: stop this item
CANCEL_ALL = "cancelAll"     #: stop every item of this handler

# Item statuses (the ones a handler reports).
UPDATING = "updating"
UPDATING_INDETERMINATE = "updatingIndeterminate"
SUCCEEDED = "succeeded"
FAILED = "failed"
STOPPED = "stopped"
SKIPPED = "skipped"
TERMINAL = frozenset([SUCCEEDED, FAILED, STOPPED, SKIPPED, "deleted"])

# Log levels.
INFORMATION = "information"
WARNING = "warning"
ERROR = "error"

# JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
REFUSED = -32000


# ---------------------------------------------------------------------------
# Errors

class HandlerError(Exception):
    """A failure of the handler's own work, for the results log.

    Raised from :meth:`Handler.sync_item` it ends the item ``failed`` and logs
    an error entry with this message. With ``actionable=True`` (and an
    ``error_id``) the user can act on the entry with ``syncmgr log show``,
    which calls :meth:`Handler.show_error` with that id::

        raise HandlerError("the server refused the password",
                           error_id="login-" + item, actionable=True)

    Raised from :meth:`Handler.items` or :meth:`Handler.prepare` it is the
    error answer of that request.
    """

    def __init__(self, message: str, error_id: Optional[str] = None,
                 actionable: bool = False):
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.actionable = actionable


class Cancelled(Exception):
    """The item was cancelled: raised by :meth:`Progress.check`; raising it
    from :meth:`Handler.sync_item` ends the item ``stopped``."""


class ManagerError(Exception):
    """The manager refused a request (a JSON-RPC error answer), e.g. a
    ``value`` greater than ``max`` (code -32005). Raised by the ``try_``
    methods and by :class:`Manager`'s methods."""

    def __init__(self, method: str, code: int, message: str):
        super().__init__("the manager refused %s: %s (code %s)" % (method, message, code))
        self.method = method
        self.code = code
        self.message = message


class ChannelClosed(Exception):
    """The manager closed the channel (``shutdown`` or end of input): no
    answer can come any more; the work in progress should stop."""


def _note(text: str) -> None:
    """One line to stderr (kept by the manager as an information entry)."""
    try:
        sys.stderr.write("syncmgr_handler: %s\n" % text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _clip(text: Optional[str]) -> Optional[str]:
    """Cuts a text to the manager's limit of 4 KiB (UTF-8), marking the cut."""
    if text is None:
        return None
    text = str(text)
    data = text.encode("utf-8")
    if len(data) <= MAX_TEXT:
        return text
    return data[:MAX_TEXT - 3].decode("utf-8", "ignore") + "\u2026"


# ---------------------------------------------------------------------------
# Values

class Item:
    """One thing the handler can sync (a mailbox, a folder, a repository).

    :param id: 1 to 64 characters, stable across sessions.
    :param name: the display name.
    :param checked: synced when the user made no choice for it.
    :param flags: any of ``hasProperties``, ``temporary``, ``roamingUser``,
        ``mayDeleteItem``, ``hidden`` mapped to ``True``.
    :param last_update: when it was last brought up to date: a
        ``datetime`` (naive = local time) or a POSIX timestamp.
    """

    def __init__(self, id: str, name: str, checked: bool = True,
                 flags: Optional[Dict[str, bool]] = None,
                 last_update: Union[None, float, datetime.datetime] = None):
        self.id = id
        self.name = name
        self.checked = checked
        self.flags = dict(flags or {})
        self.last_update = last_update

    def to_json(self) -> Dict[str, Any]:
        """The item as ``enumItems`` sends it."""
        when = self.last_update
        if isinstance(when, (int, float)):
            when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.astimezone()
            when = when.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        return {"id": self.id, "name": self.name, "checked": bool(self.checked),
                "flags": self.flags, "lastUpdate": when}

    def __repr__(self) -> str:
        return "Item(%r, %r, checked=%r)" % (self.id, self.name, self.checked)


class Context:
    """What started this session (the ``initialize`` params).

    Attributes: ``event`` (``manual``, ``connect``, ``pendingDisconnect``,
    ``idle``, ``invoke``, ``scheduled``; unknown events read ``manual``),
    ``may_bother_user``, ``settings_only``, ``cookie``.
    """

    EVENTS = ("connect", "pendingDisconnect", "manual", "idle", "invoke", "scheduled")

    def __init__(self, params: Optional[Dict[str, Any]] = None):
        params = params or {}
        event = params.get("event", "manual")
        self.event = event if event in self.EVENTS else "manual"
        self.may_bother_user = bool(params.get("mayBotherUser", True))
        self.settings_only = bool(params.get("settingsOnly", False))
        self.cookie = params.get("cookie")

    def __repr__(self) -> str:
        return "Context(event=%r, may_bother_user=%r, settings_only=%r, cookie=%r)" % (
            self.event, self.may_bother_user, self.settings_only, self.cookie)


# ---------------------------------------------------------------------------
# The channel

class _CancelState:
    """Who is cancelled in the current sync round; a condition to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._all = False
        self._closed = False
        self._items = set()  # type: set

    def reset(self) -> None:
        with self._cond:
            self._all = False
            self._items.clear()

    def cancel_item(self, item: str) -> None:
        with self._cond:
            self._items.add(item)
            self._cond.notify_all()

    def cancel_all(self) -> None:
        with self._cond:
            self._all = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def state(self, item: str) -> str:
        # No lock: every report reads the state, and within a round each
        # flag only goes from unset to set, so an unlocked read (each one
        # atomic under the GIL) is a state that was true a moment ago.
        if self._all or self._closed:
            return CANCEL_ALL
        if item in self._items:
            return CANCEL_ITEM
        return CONTINUE

    def wait(self, item: str, timeout: Optional[float]) -> str:
        with self._cond:
            self._cond.wait_for(lambda: self.state(item) != CONTINUE, timeout)
            return self.state(item)


class _Waiter:
    """A thread's handle for sleeping on the connection; one per thread,
    reused (a thread waits for one thing at a time).

    ``wake`` is a lock kept locked: the thread sleeps by acquiring it, and
    the one waker releases it (whoever removes the waiter from
    ``_Connection._sleepers``, so exactly once per sleep). ``ready`` is what
    the thread waits for, a predicate over the connection's state.
    """

    __slots__ = ("wake", "ready", "answer")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.ready = None  # type: Optional[Callable[[], bool]]
        self.answer = None  # type: Optional[Dict[str, Any]]

    def answered(self) -> bool:
        """``ready`` of a caller: its answer has come."""
        return self.answer is not None


_MAIN_LOOP_METHODS = frozenset([
    "initialize", "getHandlerInfo", "enumItems", "showProperties",
    "prepareForSync", "synchronize", "showError", "resolveConflict",
])

#: How long the handler must have made no call before the background
#: thread reads the input in its place (seconds).
QUIET = 0.01
#: How many posted progress reports (:meth:`Progress.post`) may await their
#: answer at once, per connection.
POST_WINDOW = 8

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_raw_decode = json.JSONDecoder().raw_decode


def _parse(line: bytes) -> Any:
    """``json.loads`` of one line from the manager, minus the two regular
    expression matches of its whitespace handling for the usual line
    (none before, a newline after): a good part of the SDK's cost per
    answer."""
    text = line.decode("utf-8")
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)  # whitespace first, or the error to report
    if end == len(text) or text[end:] in ("\n", "\r\n"):
        return value
    return json.loads(text)


class _Connection:
    """The handler's end of the channel, shared by every thread.

    Leader/follower reading: whoever waits for something (a caller for its
    answer, the main loop for the next request, a poster for window credit)
    reads the input itself when nobody else does, until its own thing has
    come, then hands the reading on to one other waiting thread. So the
    answer to a call is usually read by the caller itself, without waking
    another thread. The thread that reads routes what it reads: answers to
    their callers, ``setItemStatus`` and ``shutdown`` applied at once,
    unknown methods answered, other requests queued for the main loop.

    A background thread reads in quiet periods (nobody waiting and no call
    for :data:`QUIET` seconds), so that a cancel or the end of input reaches
    a handler that is busy with its own work; it also runs the exit
    watchdog.
    """

    def __init__(self, infile: io.BufferedIOBase, outfile: io.BufferedIOBase,
                 exit_grace: Optional[float]):
        self._in = infile
        self._out = outfile
        self._out_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._finished = threading.Event()
        self._exit_grace = exit_grace
        self._local = threading.local()
        self.cancel = _CancelState()
        # The state below is guarded by _lock.
        self._lock = threading.Lock()
        self._reading = False  # a thread leads (reads the input)
        # Outstanding requests: id -> the caller's _Waiter, or the item of a
        # posted report.
        self._pending = {}  # type: Dict[int, Union[_Waiter, str]]
        self._posted = 0  # posted reports not answered yet
        self._sleepers = {}  # type: Dict[_Waiter, bool]  # in order of arrival
        self._requests = collections.deque()  # type: collections.deque
        self._closed = False
        self._last_call = 0.0  # time.monotonic() of the last call or post
        # The background thread waits on _idle; _parked: without a timeout,
        # until the reading stops with nobody else waiting.
        self._idle = threading.Condition(self._lock)
        self._parked = False

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        threading.Thread(target=self._background, name="syncmgr-reader", daemon=True).start()

    def finish(self) -> None:
        self._finished.set()

    # -- writing

    def _send(self, message: Dict[str, Any]) -> None:
        line = (_encode(message) + "\n").encode("utf-8")
        with self._out_lock:
            self._out.write(line)
            self._out.flush()

    def notify(self, method: str, params: Dict[str, Any]) -> None:
        """Sends a notification (no answer comes)."""
        try:
            self._send({"jsonrpc": "2.0", "method": method, "params": params})
        except (OSError, ValueError) as e:
            if self._closed:
                raise ChannelClosed() from e
            raise

    def respond(self, id: Any, result: Any) -> None:
        self._send({"jsonrpc": "2.0", "id": id, "result": result})

    def respond_error(self, id: Any, code: int, message: str) -> None:
        self._send({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})

    def call(self, method: str, params: Dict[str, Any]) -> Any:
        """Sends a request and waits for its answer (from any thread)."""
        waiter = self._waiter()
        waiter.answer = None
        rid = next(self._ids)
        with self._lock:
            if self._closed:
                raise ChannelClosed()
            self._pending[rid] = waiter
            self._last_call = time.monotonic()
        try:
            self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        except (OSError, ValueError) as e:
            with self._lock:
                self._pending.pop(rid, None)
            if self._closed:
                raise ChannelClosed() from e
            raise
        if not self._await(waiter, waiter.answered):
            raise ChannelClosed()
        answer = waiter.answer
        if "error" in answer:
            raise _refusal(method, answer)
        return answer.get("result")

    def post(self, item: str, params: Dict[str, Any]) -> bool:
        """Sends a ``progress`` request without waiting for its answer, once
        fewer than :data:`POST_WINDOW` posted ones are outstanding; the
        answer is applied by whoever reads it. ``False``: the channel is
        closed."""
        rid = next(self._ids)
        lock = self._lock
        while True:
            with lock:
                if self._closed:
                    return False
                if self._posted < POST_WINDOW:
                    self._posted += 1
                    self._pending[rid] = item
                    self._last_call = time.monotonic()
                    break
            self._await(self._waiter(), self._has_credit)
        try:
            self._send({"jsonrpc": "2.0", "id": rid, "method": "progress", "params": params})
        except (OSError, ValueError):
            with lock:
                if self._pending.pop(rid, None) is not None:
                    self._posted -= 1
                    self._wake_ready()
            if self._closed:
                return False
            raise
        return True

    def wait_posted(self) -> None:
        """Waits until every posted report is answered or the channel closed."""
        self._await(self._waiter(), self._all_posted_answered)

    def next_request(self) -> Optional[Tuple[Any, str, Any]]:
        """The main loop's next request ``(id, method, params)``; ``None``
        once the channel is closed and every queued request was taken."""
        if self._await(self._waiter(), self._has_request):
            return self._requests.popleft()  # only the main loop takes
        return None

    # -- waiting (the predicates are called with _lock held)

    def _has_credit(self) -> bool:
        return self._posted < POST_WINDOW

    def _all_posted_answered(self) -> bool:
        return self._posted == 0

    def _has_request(self) -> bool:
        return bool(self._requests)

    def _busy(self) -> bool:
        """The background reader's cue to stop: someone waits, or calls are
        being made (their callers read their answers themselves)."""
        return bool(self._sleepers) or time.monotonic() - self._last_call < QUIET

    def _waiter(self) -> _Waiter:
        try:
            return self._local.waiter
        except AttributeError:
            waiter = self._local.waiter = _Waiter()
            return waiter

    def _await(self, waiter: _Waiter, ready: Callable[[], bool]) -> bool:
        """Waits until ``ready()`` holds (``True``) or the channel is closed
        (``False``), reading the input while nobody else does."""
        lock = self._lock
        while True:
            with lock:
                if ready():
                    return True
                if self._closed:
                    return False
                lead = not self._reading
                if lead:
                    self._reading = True
                else:
                    waiter.ready = ready
                    self._sleepers[waiter] = True
            if lead:
                if self._lead(ready):
                    return True
            else:
                # Released once: by whoever makes ready() hold, by the
                # leader handing the reading on, or by _close.
                waiter.wake.acquire()

    def _lead(self, ready: Callable[[], bool]) -> bool:
        """Reads and handles lines until ``ready()`` holds (``True``) or the
        channel closes (``False``), then hands the reading on. The caller
        has set ``_reading``."""
        lock = self._lock
        try:
            while self._step():
                with lock:
                    if ready():
                        self._hand_off()
                        return True
        except BaseException:
            with lock:
                self._hand_off()
            raise
        with lock:
            self._hand_off()
        return False

    def _hand_off(self) -> None:
        """Stops reading and wakes a successor, if anyone waits (``_lock``
        held)."""
        self._reading = False
        if self._sleepers:
            # It waits for something that has not come yet (whoever's thing
            # came was woken already): it reads next. The newest sleeper:
            # answers come roughly in request order, so it likely reads the
            # answers of the others before its own, rather than handing the
            # reading on again after one line.
            waiter, _ = self._sleepers.popitem()
            waiter.wake.release()
        elif self._parked:
            self._parked = False
            self._idle.notify()

    def _wake_ready(self) -> None:
        """Wakes the sleepers whose thing is there now (``_lock`` held)."""
        for waiter in [w for w in self._sleepers if w.ready()]:
            del self._sleepers[waiter]
            waiter.wake.release()

    # -- the background thread

    def _background(self) -> None:
        """Reads while the handler is quiet; once the channel is closed,
        ends the process if the handler does not stop within the grace."""
        while self._await_quiet():
            self._lead(self._busy)
        if self._exit_grace is not None and not self._finished.wait(self._exit_grace):
            _note("the manager closed the channel and the handler did not stop "
                  "within %s s; exiting" % self._exit_grace)
            os._exit(0)

    def _await_quiet(self) -> bool:
        """Waits until nobody reads or waits and no call was made for
        :data:`QUIET` seconds, then takes the reading (``True``); ``False``
        once the channel is closed."""
        with self._lock:
            while not self._closed:
                left = self._last_call + QUIET - time.monotonic()
                if self._reading or self._sleepers:
                    if left > 0:
                        # Calls are being made: look again later rather
                        # than have every call that ends wake this thread.
                        self._idle.wait(QUIET)
                    else:
                        # Someone waits long (the main loop for a request,
                        # a slow answer): until the reading stops.
                        self._parked = True
                        self._idle.wait()
                        self._parked = False
                elif left > 0:
                    self._idle.wait(left)
                else:
                    self._reading = True
                    return True
            return False

    # -- reading (by the leader only)

    def _step(self) -> bool:
        """Reads and handles one line; ``False`` once the channel is closed
        (end of input, ``shutdown``, a read error)."""
        try:
            line = self._in.readline(MAX_LINE + 1)
            while len(line) > MAX_LINE and not line.endswith(b"\n"):
                # Too long: drop it up to its newline.
                while line and not line.endswith(b"\n"):
                    line = self._in.readline(MAX_LINE)
                _note("skipped a line from the manager longer than %d bytes" % MAX_LINE)
                line = self._in.readline(MAX_LINE + 1)
        except (OSError, ValueError) as e:
            _note("cannot read from the manager: %s" % e)
            line = b""
        if line and self._dispatch(line):
            return True
        self._close()
        return False

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._pending.clear()  # their callers see the flag: ChannelClosed
            self._posted = 0
            for waiter in self._sleepers:
                waiter.wake.release()
            self._sleepers.clear()
            self._idle.notify_all()  # the background thread: the watchdog
        self.cancel.close()

    def _dispatch(self, line: bytes) -> bool:
        """Handles one line; ``False`` to stop reading (``shutdown``)."""
        try:
            message = _parse(line)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            if not line.strip():
                return True
            _note("bad line from the manager: %s" % e)
            self._safely(self.respond_error, None, PARSE_ERROR, "not JSON: %s" % e)
            return True
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            _note("not a JSON-RPC 2.0 message: %.200s" % line.strip())
            self._safely(self.respond_error, None, INVALID_REQUEST,
                         "not a JSON-RPC 2.0 message")
            return True
        method = message.get("method")
        if method is None:
            self._route_answer(message)
            return True
        params = message.get("params") or {}
        if "id" not in message:  # a notification
            if method == "shutdown":
                return False
            if method == "setItemStatus" and isinstance(params, dict):
                if params.get("status") == SKIPPED and isinstance(params.get("item"), str):
                    self.cancel.cancel_item(params["item"])
            return True
        rid = message["id"]
        if method == "shutdown":
            self._safely(self.respond, rid, {})
            return False
        if method in _MAIN_LOOP_METHODS:
            if method == "prepareForSync":
                # A new round; reset here, in arrival order, so that a
                # setItemStatus right after it is kept.
                self.cancel.reset()
            with self._lock:
                self._requests.append((rid, method, params))
                if self._sleepers:
                    self._wake_ready()
        else:
            self._safely(self.respond_error, rid, METHOD_NOT_FOUND,
                         "method not found: %s" % method)
        return True

    def _route_answer(self, message: Dict[str, Any]) -> None:
        rid = message.get("id")
        refused = None  # type: Optional[str]
        with self._lock:
            entry = self._pending.pop(rid, None) if isinstance(rid, int) else None
            if isinstance(entry, _Waiter):
                entry.answer = message
                if self._sleepers.pop(entry, False):
                    entry.wake.release()
                return
            if entry is not None:
                # A posted report: its cancel is applied before the window
                # frees, so that whoever waits for the window or for
                # wait_posted() sees it.
                if "error" in message:
                    refused = entry
                else:
                    _apply_action(self.cancel, entry, message.get("result"))
                self._posted -= 1
                if self._sleepers:
                    self._wake_ready()
        if entry is None:
            _note("answer to no request of ours (id %r)" % (rid,))
        elif refused is not None:
            _note("progress of %s: %s" % (refused, _refusal("progress", message)))

    def _safely(self, send: Callable[..., None], *args: Any) -> None:
        try:
            send(*args)
        except (OSError, ValueError) as e:
            _note("cannot answer the manager: %s" % e)


def _refusal(method: str, answer: Dict[str, Any]) -> ManagerError:
    """The :class:`ManagerError` of an error answer."""
    error = answer["error"] if isinstance(answer["error"], dict) else {}
    return ManagerError(method, error.get("code", 0), str(error.get("message", "")))


def _apply_action(cancel: _CancelState, item: str, result: Any) -> None:
    """Folds the answer to a progress report into the cancel state."""
    action = result.get("action") if isinstance(result, dict) else None
    if action == CANCEL_ITEM:
        cancel.cancel_item(item)
    elif action == CANCEL_ALL:
        cancel.cancel_all()


# ---------------------------------------------------------------------------
# What a handler calls

class Manager:
    """The manager, as the handler sees it from ``prepare`` until the end of
    the sync: log entries, connections, dialogs. Usable from any thread;
    calls outside that window are refused. Available as ``handler.manager``
    and ``progress.manager``. Its methods raise :class:`ManagerError` and
    :class:`ChannelClosed`."""

    def __init__(self, conn: _Connection):
        self._conn = conn

    def log(self, text: str, level: str = INFORMATION, error_id: Optional[str] = None,
            item: Optional[str] = None, actionable: bool = False) -> str:
        """Records a results-log entry (``logError``) and returns its error id
        (``error_id``, or the one the manager assigned). ``actionable=True``
        lets the user act on it with ``syncmgr log show``, which reaches
        :meth:`Handler.show_error` with the id."""
        params = {"level": level, "text": _clip(text), "actionable": bool(actionable)}
        if error_id is not None:
            params["errorId"] = error_id
        if item is not None:
            params["item"] = item
        return self._conn.call("logError", params)["errorId"]

    def report_conflict(self, item: str, conflict_id: str, text: str,
                        versions: Sequence[Dict[str, Any]]) -> None:
        """Reports versions of ``item`` the handler cannot choose between
        (``reportConflict``); returns once the manager stored it. Each version
        is ``{"label": ..., "size"?: int, "modified"?: RFC 3339 text,
        "detail"?: ...}``, two or more, in an order the handler keeps:
        :meth:`Handler.resolve_conflict` names the one to keep by its index.
        ``conflict_id`` is the handler's own, stable across syncs (reporting
        it again replaces it)."""
        self._conn.call("reportConflict", {
            "item": item,
            "conflictId": conflict_id,
            "text": _clip(text),
            "versions": [dict(v) for v in versions],
        })

    def conflict_resolved(self, item: str, conflict_id: str) -> None:
        """Tells the manager a conflict went away by itself (the versions
        became equal, one of them went): it leaves the conflict store."""
        self._conn.notify("conflictResolved", {"item": item, "conflictId": conflict_id})

    def delete_log(self, error_id: Optional[str] = None) -> None:
        """Removes an entry this handler logged in this session, or all of them."""
        self._conn.call("deleteLogError", {"errorId": error_id})

    def establish_connection(self, connection: Optional[str] = None) -> None:
        """Asks the manager for a network connection (the handler must have
        the ``mayEstablishConnection`` flag)."""
        self._conn.call("establishConnection", {"connection": connection})

    def enable_modeless(self, enable: bool) -> bool:
        """``True``: may the handler show a dialog now? (the answer).
        ``False``: the dialog is closed."""
        return bool(self._conn.call("enableModeless", {"enable": bool(enable)})["allowed"])

    @property
    def closed(self) -> bool:
        """Whether the manager closed the channel."""
        return self._conn.closed


class Progress:
    """The progress handle of one item during :meth:`Handler.sync_item`.
    Thread-safe: report from any thread (a thread reading a child process's
    output, a pool of workers)."""

    def __init__(self, item: str, manager: Manager):
        self.item = item
        self.manager = manager
        self._conn = manager._conn
        self._terminal = None  # type: Optional[str]

    def report(self, value: Optional[int] = None, max: Optional[int] = None,
               text: Optional[str] = None, status: Optional[str] = None) -> str:
        """Reports progress; every argument optional (absent = unchanged).
        Returns the manager's answer: :data:`CONTINUE`, :data:`CANCEL_ITEM` or
        :data:`CANCEL_ALL`. Cancels are sticky: once the item is cancelled,
        every later report answers the cancel again.

        Never raises: a report the manager refuses (e.g. ``value > max``) is
        written to stderr and answers the current cancel state; when the
        manager is gone it answers :data:`CANCEL_ALL`. Use :meth:`try_report`
        to see refusals. ``value`` and ``max`` are non-negative integers in
        any unit (bytes, files, steps); texts over 4 KiB are cut.

        Each call waits for the manager (a round trip); to report faster
        than that, use :meth:`post`.
        """
        try:
            return self.try_report(value=value, max=max, text=text, status=status)
        except ChannelClosed:
            return CANCEL_ALL
        except ManagerError as e:
            _note("progress of %s: %s" % (self.item, e))
            return self.state

    def try_report(self, value: Optional[int] = None, max: Optional[int] = None,
                   text: Optional[str] = None, status: Optional[str] = None) -> str:
        """Like :meth:`report`, but raises :class:`ManagerError` when the
        manager refuses the report and :class:`ChannelClosed` when it is gone."""
        result = self._conn.call("progress", self._params(value, max, text, status))
        if status in TERMINAL:
            self._terminal = status
        _apply_action(self._conn.cancel, self.item, result)
        return self.state

    def post(self, value: Optional[int] = None, max: Optional[int] = None,
             text: Optional[str] = None, status: Optional[str] = None) -> str:
        """Sends a report like :meth:`report` but does not wait for the
        manager's answer: returns at once with the cancel state known so far
        (:attr:`state`). For reports sent faster than a round trip (a
        counter per file or per chunk).

        The answer is applied when it arrives: a cancel shows in
        :attr:`state`, :attr:`cancelled` and the next ``post``, a refusal
        is written to stderr. At most :data:`POST_WINDOW` (8) posted reports
        await their answer at once: past that, ``post`` waits for one.
        :meth:`flush` waits for all of them. Returns :data:`CANCEL_ALL` once
        the manager is gone. A terminal ``status`` counts as with
        :meth:`report` (the SDK then sends no final status of its own).
        """
        if not self._conn.post(self.item, self._params(value, max, text, status)):
            return CANCEL_ALL
        if status in TERMINAL:
            self._terminal = status
        return self.state

    def flush(self) -> str:
        """Waits until every report posted on this channel (by any item) has
        its answer, or the manager is gone; returns :attr:`state`, which
        then includes every cancel those answers carried. The SDK flushes by
        itself before answering the manager's ``synchronize``."""
        self._conn.wait_posted()
        return self.state

    def _params(self, value: Optional[int], max: Optional[int], text: Optional[str],
                status: Optional[str]) -> Dict[str, Any]:
        params = {"item": self.item}  # type: Dict[str, Any]
        if value is not None:
            params["value"] = int(value)
        if max is not None:
            params["max"] = int(max)
        if text is not None:
            params["text"] = _clip(text)
        if status is not None:
            params["status"] = status
        return params

    @property
    def state(self) -> str:
        """The cancel state without sending anything: :data:`CONTINUE`,
        :data:`CANCEL_ITEM` or :data:`CANCEL_ALL`."""
        return self._conn.cancel.state(self.item)

    @property
    def cancelled(self) -> bool:
        """Whether the manager asked to stop this item (a cancel answer, a
        ``setItemStatus``, or the channel closed)."""
        return self.state != CONTINUE

    def check(self) -> None:
        """Raises :class:`Cancelled` when the item was cancelled."""
        if self.cancelled:
            raise Cancelled(self.item)

    def wait_cancelled(self, timeout: Optional[float]) -> bool:
        """Waits up to ``timeout`` seconds (``None``: forever) for a cancel
        of this item; ``True`` as soon as it is cancelled, ``False`` when the
        time ran out. Use it instead of ``time.sleep``."""
        return self._conn.cancel.wait(self.item, timeout) != CONTINUE

    def log(self, text: str, level: str = INFORMATION, error_id: Optional[str] = None,
            actionable: bool = False) -> Optional[str]:
        """Records a results-log entry about this item; returns its error id,
        or ``None`` when the manager refused it (noted on stderr) or is gone."""
        try:
            return self.manager.log(text, level=level, error_id=error_id, item=self.item,
                                    actionable=actionable)
        except ChannelClosed:
            return None
        except ManagerError as e:
            _note(str(e))
            return None

    def _send_status(self, status: str, text: Optional[str] = None) -> None:
        try:
            self.try_report(status=status, text=text)
        except ChannelClosed:
            pass
        except ManagerError as e:
            _note("reporting %s for %s: %s" % (status, self.item, e))


# ---------------------------------------------------------------------------
# The handler

SyncResult = Union[None, str, Tuple[str, Optional[str]]]


class Handler:
    """Subclass it; override :meth:`items` and :meth:`sync_item` at least.

    Class attributes: ``name`` (the display name), ``flags`` (handler flags:
    ``hasProperties``, ``mayEstablishConnection``, ``alwaysListHandler``,
    ``hidden``), ``items_complete`` (``False`` = some items could not be
    listed this time; the manager keeps their stored choices),
    ``max_parallel`` (how many items sync at once, each on its own thread).

    Set by :func:`serve`: ``self.context`` (a :class:`Context`) and
    ``self.manager`` (a :class:`Manager`).
    """

    name = "Python handler"
    flags = {}  # type: Dict[str, bool]
    items_complete = True
    max_parallel = 1

    context = Context()
    manager = None  # type: Optional[Manager]

    def participate(self) -> bool:
        """``initialize``: take part in this session? (``self.context`` says
        what started it.) Default: yes."""
        return True

    def info(self) -> Dict[str, Any]:
        """``getHandlerInfo``: ``{"name": ..., "flags": {...}}``; by default
        from the ``name`` and ``flags`` attributes."""
        return {"name": self.name, "flags": dict(self.flags)}

    def items(self) -> Iterable[Union[Item, Dict[str, Any]]]:
        """``enumItems``: the items, as :class:`Item` objects (or dicts in the
        wire form). Raise :class:`HandlerError` to fail."""
        raise NotImplementedError("a handler must define items()")

    def show_properties(self, item: Optional[str]) -> str:
        """``showProperties`` for ``item`` (``None``: the handler itself).
        Returns ``"ok"``, ``"itemDeleted"`` or ``"itemsChanged"``."""
        return "ok"

    def prepare(self, items: List[str]) -> None:
        """``prepareForSync``: these items are synced next. Raise to refuse
        (the handler is released, its items fail). ``self.manager`` may log,
        establish a connection or ask for a dialog."""

    def sync_item(self, item: str, progress: Progress) -> SyncResult:
        """Syncs one item; the SDK has reported it ``updating``. Returns:

        - ``None`` or :data:`SUCCEEDED`: succeeded (text "done");
        - a status (:data:`STOPPED`, :data:`SKIPPED`, :data:`FAILED`), or a
          ``(status, text)`` pair;

        or raises: :class:`HandlerError` (``failed``, logged with its id and
        actionable flag), :class:`Cancelled` (``stopped``), anything else
        (``failed``, logged; the traceback goes to stderr). Once the item is
        cancelled, any exception ends it ``stopped``.
        """
        raise NotImplementedError("a handler must define sync_item()")

    def show_error(self, error_id: str) -> List[str]:
        """``showError``: the user acted on the log entry ``error_id``. Fix
        what can be fixed and return the items to sync again (``prepare`` and
        ``sync_item`` follow in this process). Default: none."""
        return []

    def resolve_conflict(self, item: str, conflict_id: str, keep: str,
                         version: Optional[int]) -> None:
        """``resolveConflict``: the user decided on a conflict this handler
        reported. ``keep`` is ``"one"`` (keep ``version``, an index into the
        reported versions) or ``"all"``. Return once applied (the manager then
        drops the conflict and syncs ``item``); raise :class:`HandlerError`
        saying why not (the conflict stays, with that reason), for instance
        when the versions changed since they were reported. Default: refuse.
        """
        raise HandlerError("this handler does not resolve conflicts")


# ---------------------------------------------------------------------------
# Serving

def _take_stdio() -> Tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """Private copies of stdin and stdout for the protocol; fd 1 then writes
    to stderr and fd 0 reads /dev/null, so nothing else reaches the channel."""
    sys.stdout.flush()
    in_fd, out_fd = os.dup(0), os.dup(1)  # not inherited by child processes
    null = os.open(os.devnull, os.O_RDWR)
    try:
        try:
            os.dup2(2, 1)
        except OSError:
            os.dup2(null, 1)
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    return os.fdopen(in_fd, "rb"), os.fdopen(out_fd, "wb")


def serve(handler: Handler, infile: Optional[io.BufferedIOBase] = None,
          outfile: Optional[io.BufferedIOBase] = None) -> None:
    """Serves ``handler`` until the manager sends ``shutdown`` or closes
    stdin, then returns (return from your script right after).

    By default on this process's stdin and stdout, which it takes over (see
    the module's "Output"); if the handler's code does not stop within
    :data:`EXIT_GRACE` seconds of the channel closing, the process exits with
    status 0. With ``infile`` and ``outfile`` (binary files) it serves those
    instead, leaves the process's descriptors alone and never exits the
    process.

    Unknown methods are answered -32601; malformed params -32602; a panic
    (exception) in a handler method is an error answer, never a crash.
    """
    exit_grace = None  # type: Optional[float]
    if infile is None or outfile is None:
        infile, outfile = _take_stdio()
        exit_grace = EXIT_GRACE
    conn = _Connection(infile, outfile, exit_grace)
    handler.manager = Manager(conn)
    handler.context = Context()
    conn.start()
    try:
        _main_loop(handler, conn)
    finally:
        conn.finish()


def _main_loop(handler: Handler, conn: _Connection) -> None:
    prepared = []  # type: List[str]
    while True:
        request = conn.next_request()
        if request is None:
            return
        rid, method, params = request
        try:
            if not isinstance(params, dict):
                raise _Invalid("params must be an object")
            if method == "prepareForSync":
                prepared = _str_list(params, "items")
            result = _handle(handler, conn, method, params, prepared)
        except _Invalid as e:
            _answer(conn, conn.respond_error, rid, INVALID_PARAMS,
                    "invalid params for %s: %s" % (method, e))
            continue
        except Exception as e:  # the handler's code failed: an error answer
            if not isinstance(e, HandlerError):
                traceback.print_exc()
            _answer(conn, conn.respond_error, rid, REFUSED, _clip(str(e) or type(e).__name__))
            continue
        if not _answer(conn, conn.respond, rid, result):
            return


def _answer(conn: _Connection, send: Callable[..., None], *args: Any) -> bool:
    try:
        send(*args)
        return True
    except (OSError, ValueError):
        if conn.closed:
            return False
        raise


class _Invalid(Exception):
    pass


def _str_list(params: Dict[str, Any], key: str) -> List[str]:
    value = params.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid("%s must be a list of strings" % key)
    return value


def _handle(handler: Handler, conn: _Connection, method: str, params: Dict[str, Any],
            prepared: List[str]) -> Any:
    if method == "initialize":
        handler.context = Context(params)
        return {"participate": bool(handler.participate())}
    if method == "getHandlerInfo":
        return handler.info()
    if method == "enumItems":
        items = []
        for item in handler.items():
            if isinstance(item, Item):
                items.append(item.to_json())
            elif isinstance(item, dict):
                items.append(item)
            else:
                items.append(Item(*item).to_json())
        return {"items": items, "complete": bool(handler.items_complete)}
    if method == "showProperties":
        return {"outcome": handler.show_properties(params.get("item"))}
    if method == "prepareForSync":
        handler.prepare(list(prepared))
        return {}
    if method == "synchronize":
        _synchronize(handler, conn, prepared)
        conn.wait_posted()  # every posted report answered before the round ends
        return {}
    if method == "showError":
        error_id = params.get("errorId")
        if not isinstance(error_id, str):
            raise _Invalid("errorId must be a string")
        return {"retry": list(handler.show_error(error_id))}
    if method == "resolveConflict":
        item, conflict_id = params.get("item"), params.get("conflictId")
        keep, version = params.get("keep"), params.get("version")
        if not isinstance(item, str) or not isinstance(conflict_id, str):
            raise _Invalid("item and conflictId must be strings")
        if keep == "one" and not (isinstance(version, int) and version >= 0):
            raise _Invalid("keep \"one\" needs a version (an index)")
        if keep == "all" and version is not None:
            raise _Invalid("keep \"all\" takes no version")
        if keep not in ("one", "all"):
            raise _Invalid("keep must be \"one\" or \"all\"")
        handler.resolve_conflict(item, conflict_id, keep, version)
        return {}
    raise _Invalid("unknown method")  # not reached: the reader filters methods


def _synchronize(handler: Handler, conn: _Connection, items: Sequence[str]) -> None:
    """Runs every prepared item, on up to ``handler.max_parallel`` threads."""
    pending = queue.Queue()  # type: queue.Queue
    for item in items:
        pending.put(item)
    manager = handler.manager or Manager(conn)

    def work() -> None:
        while True:
            try:
                item = pending.get_nowait()
            except queue.Empty:
                return
            _run_item(handler, manager, item)

    workers = [threading.Thread(target=work, name="syncmgr-worker-%d" % n, daemon=True)
               for n in range(1, min(max(1, int(handler.max_parallel)), max(1, len(items))))]
    for worker in workers:
        worker.start()
    work()
    for worker in workers:
        worker.join()


def _run_item(handler: Handler, manager: Manager, item: str) -> None:
    """``skipped`` if cancelled before it started; otherwise ``updating``,
    the handler's work, and the final status."""
    progress = Progress(item, manager)
    if progress.cancelled:
        progress._send_status(SKIPPED, "skipped")
        return
    progress._send_status(UPDATING)
    if progress.cancelled:
        progress._send_status(STOPPED, "stopped")
        return
    try:
        result = handler.sync_item(item, progress)
    except Cancelled:
        status, text = STOPPED, "stopped"
    except Exception as e:
        if progress.cancelled:
            status, text = STOPPED, "stopped"
        else:
            if isinstance(e, HandlerError):
                message, error_id, actionable = e.message, e.error_id, e.actionable
            else:
                traceback.print_exc()
                message = "%s: %s" % (type(e).__name__, e)
                error_id, actionable = None, False
            progress.log(message, level=ERROR, error_id=error_id, actionable=actionable)
            status, text = FAILED, message
    else:
        if isinstance(result, tuple):
            status, text = result[0], result[1]
        else:
            status, text = result or SUCCEEDED, None
        if text is None:
            text = {SUCCEEDED: "done", STOPPED: "stopped", SKIPPED: "skipped"}.get(status, status)
    if progress._terminal is None:  # unless the handler reported one itself
        progress._send_status(status, text)
