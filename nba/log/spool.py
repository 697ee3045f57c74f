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

Frame: ``b"NBAS"``, header length, body length and CRC-32 of header + body (little-endian uint32),
then a JSON header (the string columns and the shapes) and the numeric columns as raw
little-endian arrays (the eligibility mask bit-packed). A torn frame at the end of the file (a crash
inside ``write``, never acknowledged) is cut off at recovery.

One process owns a spool directory at a time (an exclusive ``flock`` on ``<dir>/lock``).
"""

from __future__ import annotations

import fcntl
import logging
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
from pathlib import Path

import numpy as np
import orjson

from nba.log.records import DecisionRecords
from nba.log.store import DecisionLog, LogLayout, validate_decisions

_logger = logging.getLogger("nba.log")
MAGIC = b"NBAS"
_HEAD = struct.Struct("<4sIII")
_STRINGS = ("decision_id", "customer_id", "policy", "policy_version", "experiment", "arm")
_FLOATS = ("time", "send_at", "propensity", "cost")


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
    where the file starts, how far it was replayed. Positions (``append``'s return value,
    :attr:`replayed`) count bytes ever appended, so they keep growing when the file is emptied.
    """

    def __init__(self, directory: str | Path, log: DecisionLog, *, rows_per_write: int = 50_000,
                 replay_every_s: float = 0.25, truncate_bytes: int = 64 << 20) -> None:
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
            raise RuntimeError(f"NBA_SPOOL_DIR: {self.directory} is in use by another process; "
                               "give every deciding process its own spool directory") from None
        self.path = self.directory / "decisions.spool"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._failed: OSError | None = None
        self._recover()
        self._written = self._synced = 0  # positions: written to the file, and fsynced too
        self._state = _State.create(self.directory / "state")
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
            raise SpoolFailed(f"spool {self.path}: a write or fsync failed ({self._failed}); nothing more is "
                              "acknowledged until the process restarts") from self._failed

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
        return self._state.get(_APPENDED) - self._state.get(_REPLAYED)

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
            _logger.error("spool %s: the replayer exited with %s; starting another", self.path,
                          self._child.returncode)
            self._start_replayer()

    def _start_replayer(self) -> None:
        cmd = [sys.executable, "-m", "nba.log.spool", str(self.directory), self.log.namespace or "",
               str(os.getpid()), str(self.rows_per_write), str(self.replay_every_s)]
        env = dict(os.environ, NBA_SPOOL_LOG_URL=self.log.url)  # not on the command line: it may hold a password
        # its own session: a signal to the owner's process group (Ctrl+C, a process manager stopping the
        # worker) must not kill it before the owner's close() has had it write the spool to the log; it
        # stops on its own once the owner has gone
        self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def _recover(self) -> None:
        """Replay what a previous owner left, cut off a torn tail and empty the file."""
        data = self.path.read_bytes()
        if not data:
            return
        frames, end = scan(data)
        if end < len(data):
            _logger.warning("spool %s: dropping %d bytes of a torn, unacknowledged frame at offset %d",
                            self.path, len(data) - end, end)
        write_frames(self.log, data, frames, self.rows_per_write)
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        _logger.warning("spool %s: replayed %d batches left by a previous process", self.path, len(frames))


_READ_BYTES = 64 << 20  # most the replayer reads at once (a log down for an hour leaves a lot)
# shared state: int64 slots of the memory-mapped ``state`` file
_APPENDED, _BASE, _REPLAYED, _FAILURES, _STOP = range(5)


class _State:
    """Five int64 counters in a memory-mapped file, shared by the spool's owner and its replayer (each
    slot has one writer; aligned 8-byte loads and stores do not tear)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._map = mmap.mmap(fd, 64)
        self._a = np.frombuffer(self._map, np.int64, 5)

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
        view = view[os.write(fd, view):]


def write_frames(log: DecisionLog, data: bytes, frames: list[tuple[int, int]], rows_per_write: int,
                 written: Callable[[int], None] | None = None) -> None:
    """Write the ``frames`` (from :func:`scan`) of ``data`` to ``log``, up to ``rows_per_write``
    decisions per transaction, calling ``written(end)`` after each transaction with the end of its
    last frame."""
    view = memoryview(data)
    batch: list[DecisionRecords] = []
    rows = 0
    for i, (s, e) in enumerate(frames):
        batch.append(decode(view[s:e]))
        rows += len(batch[-1])
        if rows >= rows_per_write or i == len(frames) - 1:
            log.log_decisions(_concat(batch))
            if written is not None:
                written(e)
            batch, rows = [], 0


def replay_forever(directory: Path, url: str, namespace: str | None, parent: int, rows_per_write: int,
                   interval: float, read_bytes: int = _READ_BYTES) -> None:
    """The replayer process: copy appended frames into the log until the owner sets stop (once all is
    replayed) or dies; reads at most ``read_bytes`` at a time (more for a bigger frame)."""
    log = DecisionLog(url, namespace=namespace, checkpoint_every_s=1.0)
    st = _State.open(directory / "state")
    fd = os.open(directory / "decisions.spool", os.O_RDONLY)
    backoff = 0.05
    while os.getppid() == parent:
        appended, replayed = st.get(_APPENDED), st.get(_REPLAYED)
        if appended <= replayed:
            if st.get(_STOP):
                break
            time.sleep(0.01)
            continue
        base = st.get(_BASE)  # read after appended: set before it when the file was emptied
        try:
            want = appended - replayed
            data = os.pread(fd, min(want, read_bytes), replayed - base)
            frames, end = scan(data)
            if not frames and len(data) < want:  # one frame bigger than a read
                data = os.pread(fd, want, replayed - base)
                frames, end = scan(data)
            if not frames or (end != len(data) and len(data) == want):
                raise RuntimeError(f"corrupt frame at offset {replayed - base + end}")
            write_frames(log, data, frames, rows_per_write, lambda e, r=replayed: st.set(_REPLAYED, r + e))
            st.set(_FAILURES, 0)
            backoff = 0.05
            pause = time.monotonic() + interval  # let batches gather: one transaction for many
            while not st.get(_STOP) and time.monotonic() < pause:
                time.sleep(0.01)
        except Exception as e:  # the log is down or busy: the batches stay in the spool; retry
            st.set(_FAILURES, st.get(_FAILURES) + 1)
            _logger.error("spool %s: replay failed (will retry): %s: %s", directory, type(e).__name__, e)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    log.close()


def _concat(batch: list[DecisionRecords]) -> DecisionRecords:
    if len(batch) == 1:
        return batch[0]
    return DecisionRecords(**{f.name: np.concatenate([getattr(b, f.name) for b in batch])
                              for f in fields(DecisionRecords)})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.nice(10)  # background work: on a busy machine the deciding process goes first
    d, ns, pid, rows, every = sys.argv[1:6]
    replay_forever(Path(d), os.environ["NBA_SPOOL_LOG_URL"], ns or None, int(pid), int(rows), float(every))
