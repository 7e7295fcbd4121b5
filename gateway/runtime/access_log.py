"""Access logs (docs/access-logs.md): one line per request, formatted on the event loop, written by a thread.

`AccessLogger` is one gateway's log as the hot path sees it (`gateway.proxy.exchange.AccessLogHook`): the
proxy asks `sampled()` once per request of a gateway that logs, and calls `write(exchange, status)` once when
the exchange is finished or failed. A line is put together right away, from parts: what repeats while a
keep-alive client repeats its request and is answered alike (client, method, path, host, user agent, country,
route, target, status, sizes) is formatted once and kept (`_Memo`), the time once per millisecond, the
durations come from tables of numbers and an id made here is its stem and last two digits (see `write`). The
parts are copied straight into the writer's buffer (a `librt.strings.BytesWriter`, which compiled code writes
to without a call through the interpreter): no line is joined or allocated on its own.

`LogWriter` owns the file of one gateway's log in this process. Lines gather on the loop in that buffer, taken
as a chunk every CHUNK_BYTES (the buffer is kept, small enough to stay in the CPU's cache), and go as one
batch of chunks to a writer thread every FLUSH_INTERVAL or when FLUSH_BYTES wait in chunks; the thread
appends each batch with one `writev` on a file opened with O_APPEND, so lines of several worker processes
appending to one file never interleave. At most MAX_QUEUED_BYTES wait for the thread: past that, batches are
dropped and their lines counted (`vamp_access_log_dropped_total`), rather than memory growing without bound
when the disk is slower than the requests. The thread reopens the file when asked (SIGUSR1, `reopen`) and
when the path no longer names the open file (moved or deleted by logrotate), which it checks at most once a
second. "-" is the process's standard output (in a worker process, the supervisor's: `set_stdout`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final

from librt.strings import BytesWriter

from gateway.config.model import FULL, AccessLog
from gateway.proxy.client import REQUEST_IDS
from gateway.proxy.exchange import AccessLogHook

if TYPE_CHECKING:
    from gateway.proxy.client import ClientConnection
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.request_head import RequestHead
    from gateway.routing.request import Lookups

log = logging.getLogger("vamp.access_log")

_monotonic: Final = time.monotonic       # (Final: the compiled build reads them without a dictionary lookup)
_wall_clock: Final = time.time
FLUSH_INTERVAL: Final = 0.1              # seconds a line may wait on the loop before its batch goes to the thread
FLUSH_BYTES: Final = 1024 * 1024         # ... or this many bytes wait in chunks (few batches: each wakes the
                                         # thread, which then takes turns with the loop for the interpreter: ~30 µs)
CHUNK_BYTES: Final = 64 * 1024           # lines gathered into one chunk of a batch (about 200 lines)
MAX_QUEUED_BYTES = 8 * 1024 * 1024   # batches waiting for the thread; past that, lines are dropped
CHECK_INTERVAL: Final = 1.0              # seconds between two checks that the path still names the open file
COMPLAINT_INTERVAL = 60.0                # seconds between two errors about writes that keep failing
MEMOS: Final = 1024                      # `_Memo`s kept per log (by head, peer, target); afresh when full
MEMOS_PER_HEAD: Final = 64               # ... and on a request head, its last one per target
_STOP: Final[tuple[list[bytes], int, int]] = ([], -1, 0)
IOV_MAX: Final = 1024                     # buffers one writev takes (Linux)

_stdout_fd = 1


def set_stdout(fd: int) -> None:
    """Where "-" writes in this process (a worker process's own stdout is its pipe to the supervisor)."""
    global _stdout_fd
    _stdout_fd = fd


class LogWriter:
    """Appends lines to one file (or standard output) from a thread of its own; the loop never waits on it."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self.pending = BytesWriter()              # the lines of the next chunk (see `added`)
        self.chunks: list[bytes] = []             # the chunks of the next batch
        self.pending_lines = 0                    # lines waiting on the loop (in `pending` and `chunks`)
        self.chunked_bytes = 0                    # the bytes of `chunks`
        self.dropped = 0                          # lines dropped (the thread could not keep up, or write)
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self._queue: queue.SimpleQueue[tuple[list[bytes], int, int]] = queue.SimpleQueue()   # (chunks, lines, bytes)
        self._queued = 0                          # bytes handed to the thread and not written yet
        self._lock = threading.Lock()             # guards _queued and dropped (both threads change them)
        self._reopen = False
        self._fd = -1
        self._failing = False                     # the last write failed (a full disk): said, then at most ...
        self._next_complaint = 0.0                # ... once every COMPLAINT_INTERVAL until a write succeeds
        self._open()
        self._worker = threading.Thread(target=self._run, name=f"access-log {path}", daemon=True)
        self._worker.start()

    # -- on the event loop -------------------------------------------------------------------------------
    def added(self) -> None:
        """One more line was written to `pending` (`AccessLogger.write` does the same inline)."""
        self.pending_lines += 1
        if len(self.pending) >= CHUNK_BYTES or self.timer is None:
            self.gathered()

    def gathered(self) -> None:
        """Lines wait: every CHUNK_BYTES of them become a chunk; when FLUSH_BYTES wait in chunks they go to the
        thread at once, else a flush is due within FLUSH_INTERVAL."""
        if len(self.pending) >= CHUNK_BYTES:
            self._chunk()
        if self.chunked_bytes >= FLUSH_BYTES or self.closed:
            self.flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(FLUSH_INTERVAL, self.flush)

    def _chunk(self) -> None:
        chunk = self.pending.getvalue()
        self.pending.truncate(0)                  # (its buffer is kept for the next chunk)
        self.chunks.append(chunk)
        self.chunked_bytes += len(chunk)

    def flush(self) -> None:
        """Hand the lines waiting to the thread as one batch (or drop them when too much waits already)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending_lines:
            return
        if len(self.pending):
            self._chunk()
        batch, lines, size = self.chunks, self.pending_lines, self.chunked_bytes
        self.chunks, self.pending_lines, self.chunked_bytes = [], 0, 0
        if self.closed:                           # (lines of exchanges that finished after the writer closed)
            with self._lock:
                self.dropped += lines
            return
        with self._lock:
            if self._queued + size > MAX_QUEUED_BYTES:
                self.dropped += lines
                return
            self._queued += size
        self._queue.put((batch, lines, size))

    def reopen(self) -> None:
        """Reopen the file at the path (SIGUSR1, after logrotate moved it)."""
        self._reopen = True
        self._queue.put(([], 0, 0))

    def close(self) -> None:
        """No more lines: what waits is written, then the thread ends (`join` waits for it)."""
        if not self.closed:
            self.flush()
            self.closed = True
            self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._worker.join(timeout)

    # -- in the writer thread ----------------------------------------------------------------------------
    def _open(self) -> None:
        if self.path == "-":
            self._fd = _stdout_fd
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if self._fd != -2:           # (said once while it keeps failing; tried again with each batch)
                log.error("access log %s: cannot open: %s; lines are dropped until it can be", self.path,
                          exc.strerror or exc)
            self._fd = -2

    def _moved(self) -> bool:
        """Does the path no longer name the open file (renamed, deleted, replaced)?"""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return True
        try:
            opened = os.fstat(self._fd)
        except OSError:
            return True
        return (on_disk.st_ino, on_disk.st_dev) != (opened.st_ino, opened.st_dev)

    def _run(self) -> None:
        next_check = time.monotonic() + CHECK_INTERVAL
        while True:
            try:
                batch, lines, size = self._queue.get(timeout=CHECK_INTERVAL)
            except queue.Empty:
                batch, lines, size = [], 0, 0
            if self.path != "-":
                now = time.monotonic()
                if self._reopen or self._fd < 0 or now >= next_check:
                    next_check = now + CHECK_INTERVAL
                    if self._reopen or self._fd < 0 or self._moved():
                        reason = "asked" if self._reopen else "the path names another file, or none"
                        self._reopen = False
                        old = self._fd
                        self._open()
                        if old >= 0 and old != self._fd:
                            os.close(old)
                        log.info("access log %s reopened (%s)", self.path, reason)
            if batch:
                self._write(batch, lines)
                with self._lock:
                    self._queued -= size
            if lines < 0:
                if self.path != "-" and self._fd >= 0:
                    os.close(self._fd)
                return

    def _write(self, batch: list[bytes], lines: int) -> None:
        if self._fd < 0:                 # the file could not be opened (said in _open)
            with self._lock:
                self.dropped += lines
            return
        try:
            for first in range(0, len(batch), IOV_MAX):    # (one writev for a batch of up to 1024 chunks)
                chunks = batch[first:first + IOV_MAX]
                written = os.writev(self._fd, chunks)
                total = sum(len(chunk) for chunk in chunks)
                if written < total:       # a short write (to a pipe): the rest, one write at a time
                    view = memoryview(b"".join(chunks))[written:]
                    while view:
                        view = view[os.write(self._fd, view):]
        except OSError as exc:
            with self._lock:
                self.dropped += lines
            now = time.monotonic()
            if not self._failing or now >= self._next_complaint:
                log.error("access log %s: cannot write: %s; lines are dropped (vamp_access_log_dropped_total) "
                          "until it can", self.path, exc.strerror or exc)
                self._failing, self._next_complaint = True, now + COMPLAINT_INTERVAL
            return
        if self._failing:
            self._failing = False
            log.warning("access log %s: writing again", self.path)


_MILLISECONDS: Final = tuple(b'.%03dZ",' % ms for ms in range(1000))   # the end of a line's time, by millisecond
# The numbers a line says most (microseconds, sizes), written once; in JSON with the key that follows them.
NUMBERS: Final = 4096
_DECIMALS: Final = [b"%d" % n for n in range(NUMBERS)]
_DURATION_ENDS: Final = [b'%d,"upstream_us":' % n for n in range(NUMBERS)]
_UPSTREAM_ENDS: Final = [b'%d,"request_id":"' % n for n in range(NUMBERS)]
_ID_ENDS: Final = tuple(b'%02x"}\n' % low for low in range(256))     # a request id's last two digits, line end


def _decimal(n: int) -> bytes:
    return _DECIMALS[n] if 0 <= n < NUMBERS else b"%d" % n


class _Clock:
    """The time of a log line, formatted once per millisecond (JSON: `{"time":"ISO 8601",`) or second (combined:
    `[CLF]`). It is read from the monotonic clock the line's duration needs anyway, plus `offset`, the wall
    clock's lead over it, taken again every second (so a wall clock set meanwhile shows within a second). A line
    before `until`, the end of the last line's millisecond, says the same time: one comparison."""
    __slots__ = ("until", "second", "json", "clf", "offset", "_iso_second", "_wall_clock")

    def __init__(self, wall_clock: Callable[[], float] = _wall_clock) -> None:
        self.until = -1.0              # (monotonic) when the millisecond `json` says ends
        self.second = -1
        self.json = b""
        self.clf = b""
        self._wall_clock = wall_clock  # (time.time; a test's own to set it)
        self.offset = wall_clock() - _monotonic()
        self._iso_second = b""

    def at(self, now: float) -> None:
        """The time of a line at `now` (monotonic), at or after `until`."""
        ms = int((now + self.offset) * 1000)
        if ms // 1000 != self.second:
            self.offset = self._wall_clock() - _monotonic()
            ms = int((now + self.offset) * 1000)
            second = self.second = ms // 1000
            moment = time.gmtime(second)
            self._iso_second = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S', moment).encode()
            self.clf = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", moment).encode()
        self.json = self._iso_second + _MILLISECONDS[ms % 1000]
        self.until = (ms + 1) / 1000 - self.offset


_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\xff]')


def _clf(text: str | None) -> bytes:
    """A value of a combined-format line: `"`, `\\` and control bytes as \\xHH (as nginx); "-" for None."""
    if text is None:
        return b"-"
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02X}", text).encode("latin-1")


def _json(text: str | None) -> bytes:
    return b"null" if text is None else encode_basestring_ascii(text).encode("ascii")


class _Memo:
    """What a log's last line for one request head, peer, target and gateway said, but for its time, durations and
    request id. A keep-alive client repeating its request, answered alike, finds its line all made but for those
    (`AccessLogger.write`). The head's own `log_memo` holds the last one written, its `log_memos` the last one
    per target (a split, or a round-robin, sends one head to several targets in turn); the log's `_memos`, the
    others.

    JSON:     {"time":"…",  `middle` (client … target, status, bytes_in, bytes_out, `"duration_us":`)  … }
    combined: `start` (client - - ) [time] `middle` ("request" status bytes_out … country, space)  … `end`
    """
    __slots__ = ("log", "peer", "target", "gateway", "fragment", "status", "bytes_in", "bytes_out", "start",
                 "middle", "end")

    def __init__(self, log: AccessLogger, peer: str, target: object, gateway: object, fragment: Any) -> None:
        self.log = log
        self.peer = peer
        self.target = target
        self.gateway = gateway
        self.fragment = fragment       # what `AccessLogger._fragment` made for this head, peer and target
        self.status = -1               # (no line yet)
        self.bytes_in = -1
        self.bytes_out = -1
        self.start = b""
        self.middle = b""
        self.end = b""


class AccessLogger(AccessLogHook):
    """One gateway's access log in this process: sampling, formatting, and its writer."""

    def __init__(self, gateway: str, settings: AccessLog, writer: LogWriter, lookups: Lookups) -> None:
        self.gateway = gateway
        self.settings = settings
        self.writer = writer
        self.lookups = lookups
        self.every = settings.sample == FULL     # every request is logged: the proxy does not ask `sampled`
        self._sample = settings.sample
        self._credit = 0
        self._memos: dict[tuple[Any, ...], _Memo] = {}   # by (head, peer, target, gateway)
        self._clock = _Clock()
        self._json = settings.format == "json"
        self._stem_of = -1                                # the request ids this process makes: `stem` of ...
        self._stem = b""                                  # ... counters `_stem_of` << 8 to (`_stem_of` << 8) + 255

    def sampled(self) -> AccessLogger | None:
        """Is the next request logged? Exactly `sample` of them, spread evenly (error diffusion, as
        condition_strength): 50% logs every other request."""
        credit = self._credit + self._sample
        if credit >= FULL:
            self._credit = credit - FULL
            return self
        self._credit = credit
        return None

    def write(self, ex: Exchange, status: int) -> None:
        """Log `ex`, answered with `status` (a client gone before any of the response: 499)."""
        now = ex.ended_at or _monotonic()       # (the end of a response, as its backend's statistics saw it)
        clock = self._clock
        if now >= clock.until:
            clock.at(now)
        request = ex.request_head
        client: ClientConnection = ex.client  # type: ignore[assignment]  # (the only ClientSide: read natively)
        peer = client.peer
        last = request.log_memo
        if (isinstance(last, _Memo) and last.log is self and last.target is ex.target and last.gateway is ex.gateway
                and last.peer == peer):
            memo = last
        else:
            memo = request.log_memo = self._memo_of_target(ex, request, peer)
        bytes_in = request.size + ex.body_buffered
        bytes_out = ex.sent
        if memo.status != status or memo.bytes_in != bytes_in or memo.bytes_out != bytes_out:
            self._describe(memo, status, bytes_in, bytes_out)
        duration = int((now - ex.started) * 1e6)
        routed_at = ex.routed_at
        upstream = int((now - routed_at) * 1e6) if routed_at else -1       # (-1: no backend was chosen)
        head_end = ex.head_end
        has_id = len(head_end) > 2                   # (b"X-Request-Id: ID\r\n\r\n", or CRLF without an id)
        writer = self.writer
        out = writer.pending
        if self._json:
            out.write(clock.json)
            out.write(memo.middle)
            if 0 <= duration < NUMBERS:
                out.write(_DURATION_ENDS[duration])
            else:
                out.write(b"%d" % duration)
                out.write(b',"upstream_us":')
            if has_id and 0 <= upstream < NUMBERS:
                out.write(_UPSTREAM_ENDS[upstream])
            else:
                out.write(b"%d" % upstream if upstream >= 0 else b"null")
                out.write(b',"request_id":"' if has_id else b',"request_id":null}\n')
            if has_id:
                count = ex.id_count
                if count:                     # an id made here: the stem changes every 256 ids
                    if count >> 8 != self._stem_of:
                        self._stem_of = count >> 8
                        self._stem = REQUEST_IDS.stem(count)
                    out.write(self._stem)
                    out.write(_ID_ENDS[count & 0xFF])
                else:                         # a trusted proxy's
                    out.write(head_end[14:-4])
                    out.write(b'"}\n')
        else:
            request_id = head_end[14:-4] if has_id else b"-"
            out.write(memo.start)
            out.write(clock.clf)
            out.write(memo.middle)
            out.write(request_id)
            out.write(b" ")
            out.write(_decimal(duration))
            out.write(b" ")
            out.write(_decimal(upstream) if upstream >= 0 else b"-")
            out.write(memo.end)
        writer.pending_lines += 1                    # (`writer.added()`, inline: most lines need no more)
        if len(out) >= CHUNK_BYTES or writer.timer is None:
            writer.gathered()

    def write_unread(self, peer: str, status: int, bytes_out: int, seconds: float, request_id: bytes | None) -> None:
        """Log a request answered before it could be read (a malformed head, one too large or too slow: 400,
        408, 414, 431...). Only its client, status, size out, duration and id are known: the request's fields,
        the gateway's, `bytes_in` and `upstream_us` are null ("-" in the combined format)."""
        clock = self._clock
        clock.at(_monotonic())
        client, country = self._client(peer, None)
        duration = max(0, int(seconds * 1e6))
        if self._json:
            self.writer.pending.write(
                b'%s"client":%s,"method":null,"path":null,"host":null,"user_agent":null,"country":%s,'
                b'"gateway":null,"route":null,"target":null,"status":%d,"bytes_in":null,"bytes_out":%d,'
                b'"duration_us":%d,"upstream_us":null,"request_id":%s}\n' % (
                    clock.json, _json(client), _json(country), status, bytes_out, duration,
                    b'"%s"' % request_id if request_id is not None else b"null"))
        else:
            self.writer.pending.write(b'%s - - %s "-" %d %d "-" "-" "-" "-" "-" "-" %s %s %d - -\n' % (
                _clf(client), clock.clf, status, bytes_out, _clf(country), request_id or b"-", duration))
        self.writer.added()

    def _memo_of_target(self, ex: Exchange, request: RequestHead, peer: str) -> _Memo:
        """The memo of a head whose last line was for another target (or peer, or gateway): the head keeps its
        last memo per target, found by the target alone (a split, or a route's round-robin, sends one head to
        several targets in turn); else `_memo`."""
        by_target = request.log_memos
        if by_target is None:
            by_target = request.log_memos = {}
        target = ex.target
        memo = by_target.get(target)
        if isinstance(memo, _Memo) and memo.log is self and memo.gateway is ex.gateway and memo.peer == peer:
            return memo
        found = self._memo(ex, request, peer)
        if len(by_target) >= MEMOS_PER_HEAD:
            by_target.clear()
        by_target[target] = found
        return found

    def _memo(self, ex: Exchange, request: RequestHead, peer: str) -> _Memo:
        """The memo of this request head for this peer, target and gateway: found, or made."""
        key = (request, peer, ex.target, ex.gateway)
        memo = self._memos.get(key)
        if memo is None:
            memo = _Memo(self, peer, ex.target, ex.gateway, self._fragment(ex))
            if len(self._memos) >= MEMOS:
                self._memos.clear()
            self._memos[key] = memo
        return memo

    def _describe(self, memo: _Memo, status: int, bytes_in: int, bytes_out: int) -> None:
        """Make the memo's parts for a line with this status and these sizes."""
        memo.status = status
        memo.bytes_in = bytes_in
        memo.bytes_out = bytes_out
        if self._json:
            memo.middle = b'%s,"status":%d,"bytes_in":%d,"bytes_out":%d,"duration_us":' % (
                memo.fragment, status, bytes_in, bytes_out)
        else:
            before_time, before_status, after_bytes = memo.fragment
            memo.start = before_time
            memo.middle = b"%s%d %d%s " % (before_status, status, bytes_out, after_bytes)
            memo.end = b" %d\n" % bytes_in

    def _client(self, peer: str, forwarded_for: str | None) -> tuple[str, str | None]:
        """A line's client address (the peer, or from X-Forwarded-For when the peer is trusted) and its country."""
        client = self.lookups.client_address(peer, forwarded_for)
        try:
            return client, self.lookups.country(client)
        except Exception:              # (a broken database must not break logging)
            return client, None

    def _fragment(self, ex: Exchange) -> Any:
        """What a line says of the request, its client and where it went: the same for every request with the
        same head from the same peer to the same target."""
        request = ex.request_head
        forwarded_for = request.forwarded_for
        client, country = self._client(ex.client.peer,
                                       forwarded_for.decode("latin-1") if forwarded_for is not None else None)
        method = request.method.decode("latin-1")
        path = request.url.decode("latin-1")
        host = request.host.decode("latin-1")
        user_agent = request.user_agent.decode("latin-1")
        gateway = ex.gateway.name if ex.gateway is not None else None
        route = ex.route.name if ex.route is not None else None
        target = ex.target.address if ex.target is not None else None
        if self._json:
            return (b'"client":%s,"method":%s,"path":%s,"host":%s,"user_agent":%s,"country":%s,"gateway":%s,'
                    b'"route":%s,"target":%s' % (_json(client), _json(method), _json(path), _json(host),
                                                 _json(user_agent), _json(country), _json(gateway), _json(route),
                                                 _json(target)))
        referer = next((value for name, value in request.headers if name.lower() == b"referer"), None)
        protocol = b"HTTP/1.0" if request.http10 else b"HTTP/1.1"
        return (b"%s - - " % _clf(client), b' "%s %s %s" ' % (_clf(method), _clf(path), protocol),
                b' "%s" "%s" "%s" "%s" "%s" "%s" %s' % (
                    _clf(referer.decode("latin-1") if referer else None), _clf(user_agent or None),
                    _clf(gateway), _clf(route), _clf(target), _clf(host or None), _clf(country)))
