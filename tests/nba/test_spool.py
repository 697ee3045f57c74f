"""The decision log's spool: exact frames, torn tails, recovery after a kill, truncation, one owner,
the dead letter of decisions the log refuses, and the replayer's outage log."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import uuid
import zlib
from dataclasses import fields, replace
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from nba.log.records import DecisionRecords, LogLayout
from nba.log.spool import (
    _APPENDED,
    _DEAD,
    _FAILURES,
    _HEAD,
    _STOP,
    DEAD_LETTER,
    MAGIC,
    Spool,
    SpoolFailed,
    _State,
    _write_all,
    decode,
    encode,
    rejected,
    replay_forever,
    scan,
)
from nba.log.store import DecisionLog


def records(n: int, prefix: str = "d", d: int = 7, a: int = 13, seed: int = 0) -> DecisionRecords:
    rng = np.random.default_rng(seed)
    eligible = rng.random((n, a)) < 0.5
    eligible[:, 0] = True
    action = np.array([rng.choice(np.flatnonzero(row)) for row in eligible], np.int64)
    t = 486_000.0 + rng.random(n) * 100
    return DecisionRecords(
        decision_id=np.array([f"{prefix}{i}" for i in range(n)], object),
        time=t,
        customer_id=np.array([f"c{i % 5}é" for i in range(n)], object),
        context=rng.normal(size=(n, d)).astype(np.float32) * np.float32(1e-3 + rng.random()),
        eligible=eligible,
        action=action,
        send_at=t + rng.random(n) * 5,
        propensity=rng.uniform(0.01, 1, n),
        policy=np.array(["lints"] * n, object),
        policy_version=np.array(["3"] * n, object),
        experiment=np.array(["exp"] * n, object),
        arm=np.array(["challenger", ""] * (n // 2) + [""] * (n % 2), object),
        cost=rng.random(n),
    )


def same(a: DecisionRecords, b: DecisionRecords) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(DecisionRecords))


def logged(log: DecisionLog) -> dict[str, tuple]:
    b = log.read()
    return {
        d: (float(t), c, int(a), float(p), bytes(x.tobytes()), bytes(e.tobytes()))
        for d, t, c, a, p, x, e in zip(
            b.decision_id, b.time, b.customer_id, b.action, b.propensity, b.context, b.eligible, strict=True
        )
    }


@pytest.mark.parametrize("n, d", [(1, 7), (9, 0), (250, 31), (0, 4)])
def test_frames_round_trip_exactly(n, d):
    rec = records(n, d=d)
    frame = encode(rec)
    assert scan(frame) == ([(0, len(frame))], len(frame))
    assert same(decode(frame), rec)


def test_bad_records_name_the_field_and_reach_nothing(tmp_path):
    bad = replace(records(4), propensity=np.array([0.5, 0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"^propensity: row 1"):
        encode(bad)
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log)
        try:
            with pytest.raises(ValueError, match=r"^propensity"):
                spool.append(bad)
            assert spool.path.stat().st_size == 0 and spool.pending_bytes == 0
        finally:
            spool.close()


def test_a_batch_the_log_would_refuse_is_not_spooled(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        log.log_decisions(records(2, "first-", d=7))
        spool = Spool(tmp_path / "spool", log)
        try:
            with pytest.raises(ValueError, match=r"^context: this log holds 7 features"):
                spool.append(records(2, "other-", d=5), LogLayout(5, 13))
            assert spool.path.stat().st_size == 0
        finally:
            spool.close()


def test_scan_stops_at_a_torn_or_corrupt_frame():
    a, b = encode(records(3, "a")), encode(records(3, "b"))
    assert scan(a + b[:-1])[1] == len(a)  # torn: the second frame is cut short
    flipped = bytearray(a + b)
    flipped[len(a) + 40] ^= 0xFF
    assert scan(bytes(flipped)) == ([(0, len(a))], len(a))  # a bit flipped inside the second frame


def test_appended_batches_reach_the_log_exactly(log, tmp_path):
    """On SQLite and PostgreSQL: what the replayer writes equals what a direct write stores."""
    with DecisionLog(f"sqlite:///{tmp_path}/ref.db") as ref:
        spool = Spool(tmp_path / "spool", log, replay_every_s=0.01)
        positions = [spool.append(records(50, f"b{k}-", seed=k)) for k in range(6)]
        assert positions == sorted(positions) and positions[-1] == spool.pending_bytes + spool.replayed
        assert spool.flush(30) and spool.replayed == positions[-1]
        spool.close()
        for k in range(6):
            ref.log_decisions(records(50, f"b{k}-", seed=k))
        assert logged(log) == logged(ref) and log.count_decisions() == 300


def test_a_killed_owner_loses_nothing_acknowledged(log, tmp_path):
    """Frames left behind (the replayer killed first, a torn frame at the end) are replayed by the next owner."""
    spool = Spool(tmp_path / "spool", log)
    os.kill(spool._child.pid, signal.SIGKILL)
    spool._child.wait()
    spool._closed = True  # as if the owner died now: no new replayer
    acked = [records(20, f"k{k}-", seed=k) for k in range(4)]
    for rec in acked:
        spool.append(rec)
    with open(spool.path, "ab") as f:  # a crash inside write(): a frame that was never acknowledged
        f.write(encode(records(20, "torn-"))[:-10])
    os.close(spool._fd)
    os.close(spool._lock_fd)  # the kernel drops a dead process's lock
    assert log.count_decisions() == 0
    again = Spool(tmp_path / "spool", log)  # recovery runs before the constructor returns
    ids = set(log.read().decision_id.tolist())
    assert ids == {d for rec in acked for d in rec.decision_id.tolist()}
    assert again.path.stat().st_size == 0
    again.append(records(5, "after-"))
    again.close()
    assert log.count_decisions() == 85


def test_replayed_twice_is_stored_once(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        rec = records(10)
        log.log_decisions(rec)
        (tmp_path / "spool").mkdir()
        (tmp_path / "spool" / "decisions.spool").write_bytes(encode(rec) + encode(records(10, "new-")))
        Spool(tmp_path / "spool", log).close()
        assert log.count_decisions() == 20


def test_the_file_is_emptied_once_replayed_and_positions_keep_growing(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, truncate_bytes=1, replay_every_s=0.0)
        last = 0
        for k in range(5):
            last = spool.append(records(30, f"t{k}-", seed=k))
            assert spool.flush(30)
        assert spool.path.stat().st_size < last  # emptied before later appends
        spool.close()
        assert log.count_decisions() == 150


def test_a_dead_replayer_is_restarted(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, replay_every_s=0.0)
        spool.append(records(5, "a-"))
        os.kill(spool._child.pid, signal.SIGKILL)
        spool._child.wait()
        assert spool.last_error is not None and "exited" in spool.last_error
        spool.append(records(5, "b-"))
        assert spool.flush(60)
        spool.close()
        assert log.count_decisions() == 10


def test_a_replayer_dead_while_nothing_is_appended_is_restarted_by_wait(tmp_path):
    """The replayer runs in its own session (a signal to the owner's process group spares it), and one
    that died anyway is restarted by a wait, not only by the next append: close() loses nothing."""
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, replay_every_s=30.0)
        assert os.getsid(spool._child.pid) == spool._child.pid != os.getsid(0)
        assert spool.wait(spool.append(records(5, "a-")), 30)  # replayed at once; then it pauses 30 s
        spool.append(records(5, "b-"))
        os.kill(spool._child.pid, signal.SIGKILL)
        spool._child.wait()
        assert spool.pending_bytes > 0
        assert spool.flush(20)
        spool.close()
        assert log.count_decisions() == 10


def test_a_written_batch_reaches_the_replayer_only_once_synced(tmp_path):
    """write() then sync(): one fsync covers every batch written before it; until then the replayer sees
    nothing, so a batch never acknowledged is never replayed by this owner."""
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, replay_every_s=0.0)
        first = spool.write(records(4, "a-"))
        second = spool.write(records(6, "b-", seed=1))
        assert second > first > 0 and spool.pending_bytes == 0
        assert not spool.wait(first, 0.3) and log.count_decisions() == 0
        spool.sync(first)  # covers the second batch too
        assert spool.pending_bytes == second and spool.wait(second, 30)
        assert log.count_decisions() == 10
        spool.sync(first)  # already durable: nothing to do
        spool.close()


def test_a_failed_fsync_is_final(tmp_path, monkeypatch):
    """After an fsync error the kernel may have dropped the unwritten pages: nothing more is acknowledged,
    while what was durable before stays so and reaches the log."""
    import nba.log.spool as spool_module

    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, replay_every_s=0.0)
        durable = spool.append(records(3, "ok-"))
        assert spool.failed is None
        pending = spool.write(records(3, "lost-", seed=1))

        def eio(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(spool_module.os, "fdatasync", eio)
        with pytest.raises(SpoolFailed, match="fsync failed"):
            spool.sync(pending)
        monkeypatch.undo()
        assert spool.failed == "[Errno 5] Input/output error"
        with pytest.raises(SpoolFailed):
            spool.write(records(2, "later-", seed=2))
        with pytest.raises(SpoolFailed):
            spool.sync(pending)
        spool.sync(durable)  # durable before the failure: still acknowledged
        assert spool.wait(durable, 30)
        spool.close()
        assert sorted(logged(log)) == ["ok-0", "ok-1", "ok-2"]


def test_one_owner_per_directory(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log)
        try:
            with pytest.raises(RuntimeError, match=r"^NBA_SPOOL_DIR: .* in use by another process"):
                Spool(tmp_path / "spool", log)
        finally:
            spool.close()
        Spool(tmp_path / "spool", log).close()  # free again once closed


def test_wait_returns_once_the_log_holds_the_batch(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        spool = Spool(tmp_path / "spool", log, replay_every_s=0.0)
        pos = spool.append(records(3, "w-"))
        assert spool.wait(pos, 30)
        assert log.count_decisions() == 3
        assert not spool.wait(pos + 1, 0.05)  # nothing appended there: times out
        spool.close()


@pytest.mark.parametrize("read_bytes", [100, 5_000, 1 << 20])
def test_the_replayer_reads_a_long_backlog_in_pieces(tmp_path, read_bytes):
    """A backlog bigger than one read (and frames bigger than a read) is replayed whole, in order."""
    frames = [encode(records(k + 1, f"r{k}-", seed=k)) for k in range(12)]
    (tmp_path / "decisions.spool").write_bytes(b"".join(frames))
    st = _State.create(tmp_path / "state")
    st.set(_APPENDED, sum(map(len, frames)))
    st.set(_STOP, 1)  # stop once everything is replayed
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        replay_forever(tmp_path, log.url, None, os.getppid(), rows_per_write=10, interval=0.0, read_bytes=read_bytes)
        assert log.count_decisions() == sum(range(1, 13))
    st.close()


# ----------------------------------------------------------------------------- dead letter
def poisoned(rec: DecisionRecords, row: int, customer_id: str = "poison\x00id") -> bytes:
    """The frame of ``rec`` with ``customer_id`` at ``row``, built as :func:`encode` builds a frame but
    without its validation: what a spool written by an older version (which let a NUL through) holds."""
    frame = encode(rec)
    _, hl, _, _ = _HEAD.unpack_from(frame)
    header = orjson.loads(frame[_HEAD.size : _HEAD.size + hl])
    header["customer_id"][row] = customer_id
    head, body = orjson.dumps(header), frame[_HEAD.size + hl :]
    return _HEAD.pack(MAGIC, len(head), len(body), zlib.crc32(body, zlib.crc32(head))) + head + body


def append_frame(spool: Spool, frame: bytes) -> int:
    """Append and fsync a ready-made frame as :meth:`Spool.append` does with the frame it encodes."""
    with spool._write_lock:
        _write_all(spool._fd, frame)
        spool._written += len(frame)
        position = spool._written
    spool.sync(position)
    return position


def dead_letters(spool: Spool) -> list[dict]:
    return [json.loads(line) for line in spool.dead_letter_path.read_text().splitlines()]


def assert_dead_letter_holds(dead: dict, rec: DecisionRecords, row: int, reason: str) -> None:
    """The dead letter's line is row ``row`` of ``rec``, field by field, refused for ``reason`` (a regex)."""
    assert dead.keys() == {f.name for f in fields(DecisionRecords)} | {"reason", "at"}
    for name in ("decision_id", "customer_id", "policy", "policy_version", "experiment", "arm"):
        assert dead[name] == getattr(rec, name)[row], name
    for name in ("time", "send_at", "propensity", "cost"):
        assert dead[name] == getattr(rec, name)[row], name
    assert dead["action"] == rec.action[row]
    assert np.array_equal(np.array(dead["context"], np.float32), rec.context[row])
    assert dead["eligible"] == np.flatnonzero(rec.eligible[row]).tolist()
    assert re.match(reason, dead["reason"]), dead["reason"]
    at = datetime.fromisoformat(dead["at"])
    assert at.tzinfo is not None and abs((datetime.now(UTC) - at).total_seconds()) < 60


def test_recovery_puts_a_poison_frame_in_the_dead_letter_and_the_service_starts(log, tmp_path):
    """A spool left by a killed process, a frame with a NUL customer id between two good ones: opening
    the spool used to fail on it (PostgreSQL's DataError) for ever; now its other rows are stored, the
    NUL row is in the dead letter, and the spool takes new batches."""
    first, bad, last = records(4, "a-"), records(3, "p-", seed=1), records(4, "b-", seed=2)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "decisions.spool").write_bytes(encode(first) + poisoned(bad, 1) + encode(last))
    spool = Spool(tmp_path / "spool", log)
    try:
        assert spool.dead_letters == 1 and spool.path.stat().st_size == 0
        want = {*first.decision_id.tolist(), "p-0", "p-2", *last.decision_id.tolist()}
        assert set(log.read().decision_id.tolist()) == want
        (dead,) = dead_letters(spool)
        poison = replace(bad, customer_id=np.array(["c0é", "poison\x00id", "c2é"], object))
        assert_dead_letter_holds(dead, poison, 1, r"^ValueError: customer_id: row 0: contains a NUL character")
        assert "\\u0000" in spool.dead_letter_path.read_text()  # escaped: the file is plain ASCII JSON
        assert spool.wait(spool.append(records(2, "after-", seed=3)), 30)
    finally:
        spool.close()
    assert log.count_decisions() == 12


def test_the_replayer_puts_a_poison_frame_in_the_dead_letter_and_goes_on(log, tmp_path):
    """The replayer process met the NUL row, failed for ever, and no later decision reached the log."""
    spool = Spool(tmp_path / "spool", log, replay_every_s=0.01)
    try:
        spool.append(records(5, "a-"))
        bad = records(3, "p-", seed=1)
        append_frame(spool, poisoned(bad, 2))
        last = spool.append(records(5, "b-", seed=2))
        assert spool.wait(last, 30), spool.last_error
        assert spool.dead_letters == 1 and spool.last_error is None
        ids = set(log.read().decision_id.tolist())
        assert len(ids) == 12 and "p-2" not in ids
        (dead,) = dead_letters(spool)
        assert dead["decision_id"] == "p-2" and dead["customer_id"] == "poison\x00id"
        assert dead["reason"].startswith("ValueError: customer_id: row 0: contains a NUL character")
        assert spool.wait(spool.append(records(2, "c-", seed=3)), 30) and spool.dead_letters == 1
    finally:
        spool.close()
    assert log.count_decisions() == 14


def refuse_customer(log: DecisionLog, customer_id: str) -> None:
    """Make the database itself refuse decisions for ``customer_id`` (a CHECK constraint; SQLite: a trigger),
    a refusal the log's validation cannot foresee."""
    table = log.decisions.name
    with log.engine.begin() as conn:
        if log.dialect == "postgresql":
            conn.exec_driver_sql(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_refused CHECK (customer_id <> '{customer_id}')"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_refused BEFORE INSERT ON {table} "
                f"WHEN NEW.customer_id = '{customer_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )


def test_rows_the_database_refuses_go_to_the_dead_letter_one_by_one(log, tmp_path):
    """An IntegrityError of the database (not of validation) on a few rows of a big transaction: the
    transaction is split until each refused row stands alone; every other row is stored once."""
    log.log_decisions(records(1, "layout-"))
    refuse_customer(log, "refused")
    batches = [records(40, f"r{k}-", seed=k) for k in range(5)]
    refused = {(1, 3), (1, 4), (3, 39)}
    for k, row in refused:
        batches[k].customer_id[row] = "refused"
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "decisions.spool").write_bytes(b"".join(map(encode, batches)))
    spool = Spool(tmp_path / "spool", log, rows_per_write=1_000)
    try:
        assert spool.dead_letters == 3
        dead = dead_letters(spool)
        assert {d["decision_id"] for d in dead} == {f"r{k}-{row}" for k, row in refused}
        for d in dead:
            k, row = (int(x) for x in re.findall(r"\d+", d["decision_id"]))
            assert_dead_letter_holds(d, batches[k], row, r"^IntegrityError: .*refused")
        assert log.count_decisions() == 1 + 200 - 3
    finally:
        spool.close()


def test_a_frame_of_another_layout_goes_to_the_dead_letter(tmp_path):
    """A batch with another number of features than the log holds can never be stored: it used to be
    concatenated with its neighbours (and fail), now it has a transaction of its own and is refused."""
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        log.log_decisions(records(1, "layout-", d=7))
        (tmp_path / "spool").mkdir()
        frames = [encode(records(3, "a-", d=7)), encode(records(2, "x-", d=5)), encode(records(3, "b-", d=7))]
        (tmp_path / "spool" / "decisions.spool").write_bytes(b"".join(frames))
        spool = Spool(tmp_path / "spool", log)
        try:
            assert spool.dead_letters == 2 and log.count_decisions() == 7
            assert all(
                d["reason"].startswith("ValueError: context: this log holds 7 features") for d in dead_letters(spool)
            )
        finally:
            spool.close()


@pytest.mark.parametrize(
    "error, refused",
    [
        (ValueError("customer_id: row 0: contains a NUL character"), True),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        (sa.exc.DataError("INSERT", (), Exception("text fields cannot contain NUL")), True),
        (sa.exc.IntegrityError("INSERT", (), Exception("check constraint")), True),
        (sa.exc.StatementError("bind", "INSERT", (), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "no")), True),
        (sa.exc.OperationalError("INSERT", (), Exception("connection refused")), False),
        (sa.exc.ProgrammingError("INSERT", (), Exception("relation does not exist")), False),
        (sa.exc.StatementError("bind", "INSERT", (), RuntimeError("pool")), False),
        (RuntimeError("corrupt frame at offset 0"), False),
        (OSError(5, "Input/output error"), False),
    ],
)
def test_only_a_refusal_of_the_decisions_themselves_is_dead_lettered(error, refused):
    assert rejected(error) is refused


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(db_url, tmp_path, caplog):
    """The log is unreachable for a second (SQLite: its directory does not exist yet; PostgreSQL: its
    database does not): one error when the outage starts, the retries at debug level, one warning when
    it ends; nothing is lost and nothing goes to the dead letter."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/later/l.db"
        admin = None

        def end_outage() -> None:
            (tmp_path / "later").mkdir()
    else:
        name = f"t_{uuid.uuid4().hex[:12]}"
        url = sa.make_url(db_url).set(database=name).render_as_string(hide_password=False)
        admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")

        def end_outage() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")

    frames = [encode(records(5, f"o{k}-", seed=k)) for k in range(3)]
    (tmp_path / "decisions.spool").write_bytes(b"".join(frames))
    st = _State.create(tmp_path / "state")
    st.set(_APPENDED, sum(map(len, frames)))
    st.set(_STOP, 1)  # stop once everything is replayed
    caplog.set_level(logging.DEBUG, logger="nba.log")
    timer = threading.Timer(1.0, end_outage)
    timer.start()
    started = time.monotonic()
    try:
        replay_forever(tmp_path, url, None, os.getppid(), rows_per_write=100, interval=0.0)
        timer.join()
        with DecisionLog(url) as replayed:
            assert replayed.count_decisions() == 15
    finally:
        timer.cancel()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.dispose()
    took = time.monotonic() - started
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nba.log"]
    errors = [m for level, m in messages if level >= logging.ERROR]
    assert len(errors) == 1 and "replay failed" in errors[0], errors
    (resumed,) = [(level, m) for level, m in messages if "resumed" in m]
    found = re.search(r"replay resumed after (\d+) failed attempts over ([\d.]+) s$", resumed[1])
    assert resumed[0] == logging.WARNING and found is not None
    attempts, seconds = int(found[1]), float(found[2])
    assert attempts >= 3 and 0.8 <= seconds <= took + 0.05  # printed to 0.1 s
    assert sum(level == logging.DEBUG and "failed again" in m for level, m in messages) == attempts - 1
    assert st.get(_FAILURES) == 0 and st.get(_DEAD) == 0 and not (tmp_path / DEAD_LETTER).exists()
    st.close()
