#!/usr/bin/env python3
"""Downloads a set of files, one item per URL, with byte progress.

    syncmgr register files -- python3 sdk/python/examples/fetch_files.py \\
        --dest ~/Downloads/mirror file:///srv/exports/report.pdf file:///srv/exports/data.csv
    syncmgr sync files

Usage: ``fetch_files.py --dest DIR [--rate BYTES_PER_SECOND] URL...``

Each URL is fetched with ``urllib`` (``file://`` here; ``http(s)://`` works
the same) into ``DIR/.<name>.part`` and renamed to ``DIR/<name>`` only once
complete, so a reader never sees half a file. The item id is the file name.

It shows: byte progress (``value``/``max`` in bytes, or indeterminate when
the size is unknown); a cancel honoured between chunks, which removes the
partial file; a failure (e.g. the file is missing) as an actionable error
``fetch-<name>`` that ``syncmgr log show`` retries; several downloads at
once (``max_parallel``); ``--rate`` as a bandwidth limit, which waits with
``progress.wait_cancelled`` so that a cancel interrupts the wait.
"""
import argparse
import os
import posixpath
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from syncmgr_handler import (  # noqa: E402
    CONTINUE, STOPPED, UPDATING_INDETERMINATE, Handler, HandlerError, Item, serve,
)

CHUNK = 64 * 1024


def file_name(url):
    """The item id of a URL: its last path segment (at most 64 characters)."""
    path = urllib.parse.urlparse(url).path
    name = urllib.parse.unquote(posixpath.basename(path.rstrip("/"))) or "index"
    return name.replace(os.sep, "_")[:64]


class FetchFiles(Handler):
    name = "File downloads"
    max_parallel = 2

    def __init__(self, dest, urls, rate):
        self.dest, self.rate = dest, rate
        self.urls = {}
        for url in urls:
            name = file_name(url)
            if name in self.urls:
                raise SystemExit("two URLs end in the same file name %r" % name)
            self.urls[name] = url

    def items(self):
        result = []
        for name, url in self.urls.items():
            target = os.path.join(self.dest, name)
            when = os.path.getmtime(target) if os.path.exists(target) else None
            result.append(Item(name, "%s (%s)" % (name, url), last_update=when))
        return result

    def prepare(self, items):
        os.makedirs(self.dest, exist_ok=True)

    def sync_item(self, item, progress):
        url = self.urls[item]
        target = os.path.join(self.dest, item)
        partial = os.path.join(self.dest, "." + item + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                size = response.headers.get("Content-Length")
                total = int(size) if size and size.isdigit() else None
                if total is None:
                    progress.report(status=UPDATING_INDETERMINATE, text="downloading")
                else:
                    progress.report(value=0, max=total, text="downloading")
                done = self._copy(response, partial, total, progress)
            if done is None:  # cancelled between chunks
                os.remove(partial)
                return STOPPED, "download cancelled"
            os.replace(partial, target)
            return None if total is not None else ("succeeded", "%d bytes" % done)
        except (OSError, ValueError) as e:  # urllib.error.URLError is an OSError
            if os.path.exists(partial):
                os.remove(partial)
            if progress.cancelled:
                return STOPPED
            raise HandlerError("cannot fetch %s: %s" % (url, getattr(e, "reason", e)),
                               error_id="fetch-" + item, actionable=True)

    def _copy(self, response, partial, total, progress):
        """Copies the body chunk by chunk; the byte count, or None if cancelled."""
        done, started = 0, time.monotonic()
        with open(partial, "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    return done
                out.write(chunk)
                done += len(chunk)
                # post, not report: a report per chunk would wait a round
                # trip each time; a cancel is seen a few chunks later.
                if progress.post(value=done if total is None or done <= total else total,
                                 max=total, text="%d KiB" % (done // 1024)) != CONTINUE:
                    return None
                if self.rate:
                    # Bandwidth limit: wait until `done` bytes are due; a
                    # cancel ends the wait at once.
                    ahead = done / self.rate - (time.monotonic() - started)
                    if ahead > 0 and progress.wait_cancelled(ahead):
                        return None

    def show_error(self, error_id):
        # A real handler might ask for credentials here; this one retries.
        item = error_id[len("fetch-"):] if error_id.startswith("fetch-") else None
        if item in self.urls:
            print("retrying the download of", self.urls[item])  # stdout is stderr now
            return [item]
        return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, help="where the files go")
    parser.add_argument("--rate", type=int, default=0, help="bytes per second (0: no limit)")
    parser.add_argument("urls", nargs="+", metavar="URL")
    args = parser.parse_args()
    serve(FetchFiles(args.dest, args.urls, args.rate))


if __name__ == "__main__":
    main()
