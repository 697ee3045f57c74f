"""A local, fsynced, append-only spool in front of a :class:`DecisionLog`: acknowledge a batch of
decisions once it is on the local disk, and write it to the log in the background.

The decision service's write-behind mode (``NBA_SPOOL_DIR``) uses it to take the database off the
answer's path: :meth:`Spool.append` validates the batch exactly as the log will, appends one framed
record to ``<dir>/decisions.spool`` and calls ``fdatasync`` before it returns, so an acknowledged
decision survives a killed process or a power loss (or, split in two, :meth:`Spool.write` and
:meth:`Spool.sync`: the caller can compute the next batch while this one's fsync runs, and one
fsync covers every batch written before it). A replayer process copies the spooled batches
into the log, many per transaction, and the file is emptied once everything in it is stored.
Writes to the log are idempotent (decision ids are unique), so replaying a frame twice is harmless:
opening a spool first replays whatever a killed owner left in it, before anything else happens.

A decision the log refuses for what it holds (:func:`rejected`: a spool written by an older version
that let a NUL character through, say) must not stop the replay behind it, nor the service's start:
the transaction it failed is split in halves, and those again, down to single decisions; the others
are written, and each refused one is appended to ``<dir>/dead-letter.jsonl`` (:class:`DeadLetter`)
and fsynced before the replay moves past it. Any other error (the log unreachable or busy) keeps the
batches in the spool, retried with backoff; the replayer logs one error when such an outage starts
and one warning when it ends.

Frame: ``b"NBAS"``, header length, body length and CRC-32 of header + body (little-endian uint32),
then a JSON header (the string columns and the shapes) and the numeric columns as raw
little-endian arrays (the eligibility mask bit-packed). A torn frame at the end of the file (a crash
inside ``write``, never acknowledged) is cut off at recovery.

One process owns a spool directory at a time (an exclusive ``flock`` on ``<dir>/lock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import mmap
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from nba.log.records import DecisionRecords, LogLayout
from nba.log.store import DecisionLog
from nba.log.validation import validate_decisions

_logger = logging.getLogger("nba.log")
MAGIC = b"NBAS"
_HEAD = struct.Struct("<4sIII")
_STRINGS = ("decision_id", "customer_id", "policy", "policy_version", "experiment", "arm")
_FLOATS = ("time", "send_at", "propensity", "cost")
DEAD_LETTER = "dead-letter.jsonl"
_REASON = 300  # most characters of an error kept in a dead letter or a log line


def encode(records: DecisionRecords) -> bytes:
    """One frame holding ``records`` (validated: ValueError naming the field otherwise)."""
    v = validate_decisions(records)
    n, d = v.context.shape
    a = v.eligible.shape[1]
    header = orjson.dumps({"n": n, "d": d, "a": a, **{k: v.cols[k].tolist() for k in _STRINGS}})
    parts = [np.ascontiguousarray(v.cols[k], "<f8").tobytes() for k in _FLOATS]
    parts.append(np.ascontiguousarray(v.cols["action"], "<i8").tobytes())
    parts.append(v.context.tobytes())
    parts.append(np.packbits(v.eligible, axis=1, bitorder="little").tobytes())
    body = b"".join(parts)
    crc = zlib.crc32(body, zlib.crc32(header))
    return _HEAD.pack(MAGIC, len(header), len(body), crc) + header + body


def decode(frame: memoryview | bytes) -> DecisionRecords:
    """The records of one whole frame (as :func:`encode` wrote it)."""
    _, hl, _bl, _ = _HEAD.unpack_from(frame)
    header = orjson.loads(bytes(frame[_HEAD.size : _HEAD.size + hl]))
    n, d, a = header["n"], header["d"], header["a"]
    body = memoryview(frame)[_HEAD.size + hl :]
    pos = 0

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        size = np.dtype(dtype).itemsize * count
        out = np.frombuffer(body[pos : pos + size], dtype).copy()
        pos += size
        return out

    floats = {k: take("<f8", n) for k in _FLOATS}
    action = take("<i8", n)
    context = take("<f4", n * d).reshape(n, d)
    nbytes = (a + 7) // 8
    eligible = np.unpackbits(take("u1", n * nbytes).reshape(n, nbytes), axis=1, count=a, bitorder="little")
    strings = {k: np.array(header[k], dtype=object) if n else np.empty(0, object) for k in _STRINGS}
    return DecisionRecords(context=context, eligible=eligible.astype(bool), action=action, **floats, **strings)


def scan(buf: memoryview | bytes) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of every whole, intact frame from the start of ``buf``, and where they stop."""
    frames, pos = [], 0
    while pos + _HEAD.size <= len(buf):
        magic, hl, bl, crc = _HEAD.unpack_from(buf, pos)
        end = pos + _HEAD.size + hl + bl
        if magic != MAGIC or end > len(buf):
            break
        if zlib.crc32(buf[pos + _HEAD.size : end]) != crc:
            break
        frames.append((pos, end))
        pos = end
    return frames, pos


class SpoolFailed(RuntimeError):
    """A write or fsync of the spool failed: nothing more can be acknowledged by this process."""


class Spool:
    """Durable local queue of decision batches, replayed into ``log`` by a replayer process.

    Args:
        directory: where ``decisions.spool``, the shared ``state`` and the owner's ``lock`` live
            (created if missing).
        log: the decision log the batches are for (the replayer opens its own connection to it).
        rows_per_write: most decisions the replayer writes in one transaction.
        replay_every_s: the replayer's pause after catching up, so that the batches of that time go
            to the log in one transaction (a batch of random customers dirties about one index page
            per customer: written one batch per transaction, the log's write-ahead file grew by 4 MB
            a batch and its fsyncs slowed the spool's).
        truncate_bytes: the file is emptied, before an append, once everything in it is replayed and
            it is at least this big.

    The replayer is a child process (``python -m nba.log.spool``), not a thread: writing to the log
    holds the interpreter lock for milliseconds at a time, and as a thread it made the decider's
    batches 40 % slower. The two share a small memory-mapped ``state`` file: how far the spool was appended,
    where the file starts, how far it was replayed, how many decisions went to the dead letter.
    Positions (``append``'s return value, :attr:`replayed`) count bytes ever appended, so they keep
    growing when the file is emptied.
    """

    def __init__(
        self,
        directory: str | Path,
        log: DecisionLog,
        *,
        rows_per_write: int = 50_000,
        replay_every_s: float = 0.25,
        truncate_bytes: int = 64 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.rows_per_write = int(rows_per_write)
        self.replay_every_s = float(replay_every_s)
        self.truncate_bytes = int(truncate_bytes)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(
                f"NBA_SPOOL_DIR: {self.directory} is in use by another process; "
                "give every deciding process its own spool directory"
            ) from None
        self.path = self.directory / "decisions.spool"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._failed: OSError | None = None
        self._state = _State.create(self.directory / "state")
        self._recover()
        self._written = self._synced = 0  # positions: written to the file, and fsynced too
        self._closed = False
        self._child: subprocess.Popen | None = None
        self._start_replayer()

    # ------------------------------------------------------------------ writing
    def append(self, records: DecisionRecords, layout: LogLayout | None = None) -> int:
        """Validate ``records``, append them and fsync; returns the position just past them.

        ``layout``: fixed in the log first (once) and checked, so the replay cannot meet a layout the
        log refuses.
        """
        position = self.write(records, layout)
        self.sync(position)
        return position

    def write(self, records: DecisionRecords, layout: LogLayout | None = None) -> int:
        """:meth:`append` without the fsync: the batch is durable, and visible to the replayer, only
        once :meth:`sync` has covered the returned position. A caller can decide the next batch while
        this one's fsync runs in another thread."""
        frame = encode(records)
        if layout is not None:
            self.log.ensure_layout(layout)  # ValueError naming context or eligible: nothing spooled
        st = self._state
        with self._write_lock:
            self._check_failed()
            self._revive()
            written = self._written
            if st.get(_REPLAYED) == written and written - st.get(_BASE) >= self.truncate_bytes:
                os.ftruncate(self._fd, 0)  # all written is synced and replayed: start the file again
                st.set(_BASE, written)
            try:
                _write_all(self._fd, frame)
            except OSError as e:  # a partial frame may be in the file: nothing after it can be trusted
                self._failed = e
                raise
            self._written = written + len(frame)
            return self._written

    def sync(self, position: int) -> None:
        """Make everything written up to ``position`` durable and hand it to the replayer: one
        ``fdatasync`` covers every batch written before it, so concurrent callers share it.

        A failed fsync is final (the kernel may have dropped the unwritten pages): it raises
        :class:`SpoolFailed` now and on every later write or sync; the process must be restarted,
        and its successor replays what the file holds.
        """
        with self._sync_lock:
            if self._synced >= position:  # durable already: a later failure does not undo that
                return
            self._check_failed()
            target = self._written
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self._failed = e
                self._check_failed()
            self._synced = target
            self._state.set(_APPENDED, target)

    def _check_failed(self) -> None:
        if self._failed is not None:
            raise SpoolFailed(
                f"spool {self.path}: a write or fsync failed ({self._failed}); nothing more is "
                "acknowledged until the process restarts"
            ) from self._failed

    @property
    def failed(self) -> str | None:
        """Why this spool acknowledges nothing more (a write or fsync failed), ``None`` while it works."""
        return None if self._failed is None else str(self._failed)

    @property
    def replayed(self) -> int:
        """Position up to which everything appended is in the log."""
        return self._state.get(_REPLAYED)

    @property
    def pending_bytes(self) -> int:
        """Bytes durably appended but not yet replayed into the log."""
        return self._state.get(_APPENDED) - self._state.get(_REPLAYED)

    @property
    def dead_letters(self) -> int:
        """Decisions the log refused since this spool was opened (its recovery included), each now a
        line of :attr:`dead_letter_path` instead of a row of the log."""
        return self._state.get(_DEAD)

    @property
    def dead_letter_path(self) -> Path:
        """The dead letter: ``<dir>/dead-letter.jsonl`` (see :class:`DeadLetter`); it keeps the lines of
        earlier owners too."""
        return self.directory / DEAD_LETTER

    @property
    def last_error(self) -> str | None:
        """Why the log is falling behind, ``None`` while the replayer keeps up."""
        failures = self._state.get(_FAILURES)
        if failures:
            return f"the replayer's last {failures} writes to the log failed (its errors are in the service log)"
        if self._child is not None and self._child.poll() is not None:
            return f"the replayer exited with {self._child.returncode}"
        return None

    def wait(self, position: int, timeout: float | None = None) -> bool:
        """Block until everything up to ``position`` is in the log; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        while self._state.get(_REPLAYED) < position:
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return False
            if now - checked > 0.1:  # nothing appended lately revives a dead replayer: waiting does
                checked = now
                with self._write_lock:
                    self._revive()
            time.sleep(0.001)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything appended so far is in the log."""
        return self.wait(self._state.get(_APPENDED), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Replay what is left (up to ``timeout`` seconds), stop the replayer and release the directory."""
        if self._closed:
            return
        if self._failed is None:
            self.sync(self._written)
        done = self.flush(timeout)
        self._closed = True
        self._state.set(_STOP, 1)
        if self._child is not None:
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        if done and self._failed is None:  # all in the log: the next owner has nothing to replay
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        self._state.close()
        os.close(self._fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    # ------------------------------------------------------------------ replay
    def _revive(self) -> None:
        """Start another replayer if this one exited (called under the write lock)."""
        if self._child is not None and self._child.poll() is not None and not self._closed:
            _logger.error("spool %s: the replayer exited with %s; starting another", self.path, self._child.returncode)
            self._start_replayer()

    def _start_replayer(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "nba.log.spool",
            str(self.directory),
            self.log.namespace or "",
            str(os.getpid()),
            str(self.rows_per_write),
            str(self.replay_every_s),
        ]
        env = dict(os.environ, NBA_SPOOL_LOG_URL=self.log.url)  # not on the command line: it may hold a password
        # its own session: a signal to the owner's process group (Ctrl+C, a process manager stopping the
        # worker) must not kill it before the owner's close() has had it write the spool to the log; it
        # stops on its own once the owner has gone
        self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def _recover(self) -> None:
        """Replay what a previous owner left, cut off a torn tail and empty the file. What the log
        refuses goes to the dead letter; an unreachable log raises (the spool is kept for the next try)."""
        data = self.path.read_bytes()
        if not data:
            return
        frames, end = scan(data)
        if end < len(data):
            _logger.warning(
                "spool %s: dropping %d bytes of a torn, unacknowledged frame at offset %d",
                self.path,
                len(data) - end,
                end,
            )
        write_frames(self.log, data, frames, self.rows_per_write, dead_letter=DeadLetter(self.directory, self._state))
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        _logger.warning("spool %s: replayed %d batches left by a previous process", self.path, len(frames))


_READ_BYTES = 64 << 20  # most the replayer reads at once (a log down for an hour leaves a lot)
# shared state: int64 slots of the memory-mapped ``state`` file (8 fit in its 64 bytes)
_APPENDED, _BASE, _REPLAYED, _FAILURES, _STOP, _DEAD = range(6)


class _State:
    """Eight int64 slots in a memory-mapped file, shared by the spool's owner and its replayer (each
    slot has one writer at a time; aligned 8-byte loads and stores do not tear)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._map = mmap.mmap(fd, 64)
        self._a = np.frombuffer(self._map, np.int64, 8)

    @classmethod
    def create(cls, path: Path) -> _State:
        """A new, zeroed state file (a new inode: a previous owner's replayer, still mapping the old
        one, is not cut off under its feet)."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(fd, 64)
        return cls(fd)

    @classmethod
    def open(cls, path: Path) -> _State:
        return cls(os.open(path, os.O_RDWR))

    def get(self, slot: int) -> int:
        return int(self._a[slot])

    def set(self, slot: int, value: int) -> None:
        self._a[slot] = value

    def close(self) -> None:
        del self._a
        self._map.close()
        os.close(self._fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def rejected(error: BaseException) -> bool:
    """Whether ``error`` is the log refusing the decisions for what they hold, so that writing them
    again can never succeed: validation's ValueError (UnicodeEncodeError is one), or the database's
    DataError or IntegrityError. Anything else (OperationalError, a lost connection, a missing
    table) is the log's trouble, not the decisions': they stay in the spool, retried."""
    if isinstance(error, sa.exc.DBAPIError):
        return isinstance(error, sa.exc.DataError | sa.exc.IntegrityError)
    if isinstance(error, sa.exc.StatementError):  # raised while binding a parameter: the cause is the value
        return isinstance(error.orig, ValueError)
    return isinstance(error, ValueError)


def _reason(error: BaseException) -> str:
    """``Type: message`` of ``error``, the driver's own message for SQLAlchemy's (without the SQL and its
    parameters), cut to a few hundred characters."""
    orig = getattr(error, "orig", None)
    text = f"{type(error).__name__}: {orig if isinstance(orig, BaseException) else error}"
    return text if len(text) <= _REASON else f"{text[: _REASON - 3]}..."


class DeadLetter:
    """``<dir>/dead-letter.jsonl``: the decisions the log refused on replay, one JSON object a line.

    A line holds the decision's fields as plain JSON (the strings; ``time``, ``send_at``,
    ``propensity`` and ``cost`` as numbers, ``null`` for a non-finite one; ``action``; ``context`` as a
    list of numbers; ``eligible`` as the list of the eligible actions' indices), then ``reason``
    (the error's type and message) and ``at`` (when it was refused, ISO 8601 UTC). The lines are
    fsynced, and counted in the spool's shared state, before the replay moves past the decision; a
    crash just between the two leaves the same decision in the file twice.
    """

    def __init__(self, directory: Path, state: _State) -> None:
        self.path = directory / DEAD_LETTER
        self._state = state

    def add(self, refused: list[tuple[DecisionRecords, BaseException]]) -> None:
        """Append one line per single-decision batch of ``refused``, with its error, and fsync."""
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = [
            json.dumps({**_plain(rec), "reason": _reason(e), "at": at}, allow_nan=False) + "\n" for rec, e in refused
        ]  # ASCII: NULs and lone surrogates escaped
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _write_all(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the file's name must survive a power loss too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._state.set(_DEAD, self._state.get(_DEAD) + len(refused))
        _logger.error(
            "spool %s: the log refused %d decision(s), now in %s (first: %s)",
            self.path.parent,
            len(refused),
            self.path,
            _reason(refused[0][1]),
        )


def _plain(rec: DecisionRecords) -> dict[str, Any]:
    """The one decision of ``rec`` as plain JSON values (see :class:`DeadLetter`)."""
    number = lambda x: float(x) if math.isfinite(x) else None  # noqa: E731
    out: dict[str, Any] = {}
    for f in fields(DecisionRecords):
        x = getattr(rec, f.name)[0]
        if f.name in _STRINGS:
            out[f.name] = str(x)
        elif f.name == "context":
            out[f.name] = [number(v) for v in x.tolist()]
        elif f.name == "eligible":
            out[f.name] = np.flatnonzero(x).tolist()
        elif f.name == "action":
            out[f.name] = int(x)
        else:
            out[f.name] = number(float(x))
    return out


def write_frames(
    log: DecisionLog,
    data: bytes,
    frames: list[tuple[int, int]],
    rows_per_write: int,
    written: Callable[[int], None] | None = None,
    dead_letter: DeadLetter | None = None,
) -> None:
    """Write the ``frames`` (from :func:`scan`) of ``data`` to ``log``, up to ``rows_per_write``
    decisions of one shape per transaction, calling ``written(end)`` after each transaction with the
    end of its last frame.

    With a ``dead_letter``, decisions the log refuses (:func:`rejected`) go there instead, and the
    rest is written (a refused transaction is split in halves, down to single decisions), before
    ``written`` is called. Any other error, or any refusal without a ``dead_letter``, raises: what
    follows the last ``written`` is to be written again.
    """
    view = memoryview(data)
    batch: list[DecisionRecords] = []
    rows = 0
    for i, (s, e) in enumerate(frames):
        records = decode(view[s:e])
        if batch and _shape(records) != _shape(batch[0]):  # another layout: never in one transaction
            _store(log, _concat(batch), dead_letter)
            if written is not None:
                written(s)
            batch, rows = [], 0
        batch.append(records)
        rows += len(records)
        if rows >= rows_per_write or i == len(frames) - 1:
            _store(log, _concat(batch), dead_letter)
            if written is not None:
                written(e)
            batch, rows = [], 0


def _store(log: DecisionLog, records: DecisionRecords, dead_letter: DeadLetter | None) -> None:
    """``records`` into ``log``, the decisions it refuses into ``dead_letter`` (when there is one)."""
    if dead_letter is None:
        log.log_decisions(records)
        return
    refused: list[tuple[DecisionRecords, BaseException]] = []
    _write_or_split(log, records, refused)
    if refused:
        dead_letter.add(refused)


def _write_or_split(
    log: DecisionLog, records: DecisionRecords, refused: list[tuple[DecisionRecords, BaseException]]
) -> None:
    """Write ``records`` in one transaction; if the log refuses them, each half again, down to single
    decisions, which are added to ``refused`` with their error."""
    try:
        log.log_decisions(records)
    except Exception as e:
        if not rejected(e):
            raise
        if len(records) == 1:
            refused.append((records, e))
            return
        half = len(records) // 2
        _write_or_split(log, _rows(records, slice(None, half)), refused)
        _write_or_split(log, _rows(records, slice(half, None)), refused)


def replay_forever(
    directory: Path,
    url: str,
    namespace: str | None,
    parent: int,
    rows_per_write: int,
    interval: float,
    read_bytes: int = _READ_BYTES,
) -> None:
    """The replayer process: copy appended frames into the log until the owner sets stop (once all is
    replayed) or dies; reads at most ``read_bytes`` at a time (more for a bigger frame).

    A failed write (the log unreachable or busy; its connection too is retried) is retried with
    backoff up to 5 s: one error is logged when such an outage starts, one warning when it ends,
    the attempts between at debug level.
    """
    log: DecisionLog | None = None
    st = _State.open(directory / "state")
    dead_letter = DeadLetter(directory, st)
    fd = os.open(directory / "decisions.spool", os.O_RDONLY)
    backoff = 0.05
    failures, outage_since = 0, 0.0
    while os.getppid() == parent:
        appended, replayed = st.get(_APPENDED), st.get(_REPLAYED)
        if appended <= replayed:
            if st.get(_STOP):
                break
            time.sleep(0.01)
            continue
        base = st.get(_BASE)  # read after appended: set before it when the file was emptied
        try:
            if log is None:
                log = DecisionLog(url, namespace=namespace, checkpoint_every_s=1.0)
            want = appended - replayed
            data = os.pread(fd, min(want, read_bytes), replayed - base)
            frames, end = scan(data)
            if not frames and len(data) < want:  # one frame bigger than a read
                data = os.pread(fd, want, replayed - base)
                frames, end = scan(data)
            if not frames or (end != len(data) and len(data) == want):
                raise RuntimeError(f"corrupt frame at offset {replayed - base + end}")

            def advanced(end: int, start: int = replayed) -> None:
                st.set(_REPLAYED, start + end)

            write_frames(log, data, frames, rows_per_write, advanced, dead_letter)
            if failures:
                _logger.warning(
                    "spool %s: replay resumed after %d failed attempts over %.1f s",
                    directory,
                    failures,
                    time.monotonic() - outage_since,
                )
                failures = 0
                st.set(_FAILURES, 0)
            backoff = 0.05
            pause = time.monotonic() + interval  # let batches gather: one transaction for many
            while not st.get(_STOP) and time.monotonic() < pause:
                time.sleep(0.01)
        except Exception as e:  # the log is down or busy: the batches stay in the spool; retry
            failures += 1
            st.set(_FAILURES, failures)
            if failures == 1:
                outage_since = time.monotonic()
                _logger.error(
                    "spool %s: replay failed; the decisions stay in the spool and are retried "
                    "until the log takes them: %s",
                    directory,
                    _reason(e),
                )
            else:
                _logger.debug("spool %s: replay failed again (attempt %d): %s", directory, failures, _reason(e))
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    if log is not None:
        log.close()


def _shape(records: DecisionRecords) -> tuple[int, int]:
    return records.context.shape[1], records.eligible.shape[1]


def _rows(records: DecisionRecords, rows: slice) -> DecisionRecords:
    return DecisionRecords(**{f.name: getattr(records, f.name)[rows] for f in fields(DecisionRecords)})


def _concat(batch: list[DecisionRecords]) -> DecisionRecords:
    if len(batch) == 1:
        return batch[0]
    return DecisionRecords(
        **{f.name: np.concatenate([getattr(b, f.name) for b in batch]) for f in fields(DecisionRecords)}
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.nice(10)  # background work: on a busy machine the deciding process goes first
    d, ns, pid, rows, every = sys.argv[1:6]
    replay_forever(Path(d), os.environ["NBA_SPOOL_LOG_URL"], ns or None, int(pid), int(rows), float(every))
