"""Helpers of the decision service's integration tests: servers on 127.0.0.1, request bodies, PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("NBA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_or_skip() -> str:
    """The PostgreSQL URL; skipped when unreachable, unless CI is set (then the test fails)."""
    import psycopg

    try:
        psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3).close()
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {PG_URL} under CI: {e}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {e}")
    return PG_URL


@dataclass
class Server:
    """A running service: its base URL, process, log file and configuration."""

    url: str
    proc: subprocess.Popen
    logfile: Path
    env: dict[str, str]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0, expect: int = 200) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == expect:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"/readyz not {expect} after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def kill_workers_under_load(
        self, send, clients: int, at_least: int, token: str | None = None, whole_tree: bool = False
    ) -> list[str]:
        """SIGKILL the worker processes (``whole_tree``: the server's process group and every descendant,
        the write-behind replayer included, which runs in a session of its own) while ``clients`` threads
        keep sending; return the decision ids acknowledged (HTTP 200) before the kill. ``send(client, k,
        i)`` posts request ``i`` of thread ``k`` and returns the response. Waits (up to 20 s) for
        ``at_least`` acknowledgements first."""
        workers = psutil.Process(self.proc.pid).children(recursive=True)
        assert workers, "no worker process"
        acked: list[str] = []
        stop = threading.Event()

        def hammer(k: int) -> None:
            with self.client(token) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = send(c, k, i)
                    except Exception:  # noqa: BLE001 - the worker is being killed: failures are expected
                        continue
                    if r.status_code == 200:
                        body = r.json()
                        acked.extend(d["decision_id"] for d in body.get("decisions", [body]))

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        deadline = time.time() + 20
        while len(acked) < at_least and time.time() < deadline:
            time.sleep(0.05)
        if whole_tree:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
            os.killpg(self.proc.pid, signal.SIGKILL)
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            psutil.wait_procs(tree, timeout=10)
        else:
            for w in workers:
                os.kill(w.pid, signal.SIGKILL)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        return acked

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(
    tmp: Path,
    env_extra: dict[str, str],
    via: str = "bentoml",
    wait: bool = True,
    args: list[str] | None = None,
    own_home: bool = True,
) -> Server:
    """Start the service on a free port of 127.0.0.1 (``via``: "bentoml" or "nba" for ``nba serve`` with
    ``args``); ``own_home``: a BentoML home of its own (else ``nba serve`` picks one)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBA_") and k != "MLFLOW_TRACKING_URI"}
    env.update(
        BENTOML_DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        NBA_POLL_S="1",
        NBA_CACHE_DIR=str(tmp / "cache"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("BENTOML_HOME", None)
    if own_home:  # its own Prometheus files (BentoML empties them at each start)
        env["BENTOML_HOME"] = str(tmp / f"bentoml-{port}")
    env.update(env_extra)
    if via == "nba":
        cmd = [
            str(Path(sys.executable).with_name("nba")),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *(args or []),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:DecisionService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    logfile = tmp / f"server-{port}.log"
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=logfile.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(f"http://127.0.0.1:{port}", proc, logfile, env)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
    return server


def customer(cid: str | None = None, **kw) -> dict:
    """A valid decide body."""
    body = {
        "customer_id": cid or f"c-{uuid.uuid4().hex[:12]}",
        "segment": "genz",
        "timezone": "Europe/Paris",
        "tenure_days": 5.0,
    }
    body.update(kw)
    return body


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of a real server (PostgreSQL), which a test can cut and restore:
    a database outage without touching the database every other test uses.

    ``cut()`` closes every proxied connection and refuses new ones (as a stopped server does); ``restore()``
    accepts them again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket

        self.target = (target_host, target_port)
        self.port = free_port()
        self._socket = socket
        self._lock = threading.Lock()
        self._conns: list = []
        self._listener = None
        self.restore()

    def url(self, pg_url: str) -> str:
        """``pg_url`` with its host and port replaced by the proxy's."""
        import sqlalchemy as sa

        return sa.make_url(pg_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def restore(self) -> None:
        s = self._socket
        listener = s.socket(s.AF_INET, s.SOCK_STREAM)
        listener.setsockopt(s.SOL_SOCKET, s.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(self._socket.SHUT_RDWR)  # wakes the accepting thread: the port is free at once
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass


def validated_both_ways(engine, body: dict) -> list:
    """What ``engine.prepare`` makes of the batch ``body`` read by column (serving.batch_json) and read by
    pydantic: each the Rows' fields (the attributes row by row), or the BadRequest's message."""
    import json

    from pydantic import BaseModel

    from serving.requests import BadRequest
    from serving.schemas import CustomerColumns, DecideBatchRequest

    raw = json.dumps(body).encode()
    by_column = DecideBatchRequest.model_validate_json(raw)
    assert isinstance(by_column.customers, CustomerColumns)
    out = []
    for req in (by_column, BaseModel.model_validate_json.__func__(DecideBatchRequest, raw)):
        try:
            rows = engine.prepare(req.customers, req.now, req.alternatives, batch=True).rows
        except BadRequest as e:
            out.append(str(e))
        else:
            out.append(repr({k: list(v) if k == "attributes" else v for k, v in vars(rows).items()}))
    return out


ODD_IDS = ['quote"d', "back\\slash", "tab\there", "été", "ctl\x01", "del\x7f", "line\u2028sep", "😀"]


def answered_both_ways(engine, customers: list, now: float, alternatives: int, experiment: str) -> bytes:
    """A batch of ``customers`` (Customer fields) decided by ``engine``; asserts that its answer written column
    by column (serving.endpoints._batch_body) is byte for byte orjson's of the dict per decision, and
    returns it."""
    from serving.endpoints import _batch_body, _decisions, _dumps
    from serving.schemas import DecideBatchRequest

    req = DecideBatchRequest.model_validate({"now": now, "customers": customers, "alternatives": alternatives})
    job = engine.prepare(req.customers, req.now, req.alternatives, batch=True)
    res = engine.decide(job)
    body = _batch_body(job, res, experiment)
    assert body == _dumps({"decisions": _decisions(job, res, experiment)})
    return body
