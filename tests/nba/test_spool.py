"""The decision log's spool: exact frames, torn tails, recovery after a kill, truncation, one owner."""

from __future__ import annotations

import os
import signal
from dataclasses import fields, replace

import numpy as np
import pytest

from nba.log.records import DecisionRecords
from nba.log.spool import _APPENDED, _STOP, Spool, SpoolFailed, _State, decode, encode, replay_forever, scan
from nba.log.store import DecisionLog, LogLayout


def records(n: int, prefix: str = "d", d: int = 7, a: int = 13, seed: int = 0) -> DecisionRecords:
    rng = np.random.default_rng(seed)
    eligible = rng.random((n, a)) < 0.5
    eligible[:, 0] = True
    action = np.array([rng.choice(np.flatnonzero(row)) for row in eligible], np.int64)
    t = 486_000.0 + rng.random(n) * 100
    return DecisionRecords(
        decision_id=np.array([f"{prefix}{i}" for i in range(n)], object), time=t,
        customer_id=np.array([f"c{i % 5}é" for i in range(n)], object),
        context=rng.normal(size=(n, d)).astype(np.float32) * np.float32(1e-3 + rng.random()),
        eligible=eligible, action=action, send_at=t + rng.random(n) * 5, propensity=rng.uniform(0.01, 1, n),
        policy=np.array(["lints"] * n, object), policy_version=np.array(["3"] * n, object),
        experiment=np.array(["exp"] * n, object), arm=np.array(["challenger", ""] * (n // 2) + [""] * (n % 2), object),
        cost=rng.random(n))


def same(a: DecisionRecords, b: DecisionRecords) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(DecisionRecords))


def logged(log: DecisionLog) -> dict[str, tuple]:
    b = log.read()
    return {d: (float(t), c, int(a), float(p), bytes(x.tobytes()), bytes(e.tobytes()))
            for d, t, c, a, p, x, e in zip(b.decision_id, b.time, b.customer_id, b.action, b.propensity, b.context,
                                           b.eligible, strict=True)}


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
