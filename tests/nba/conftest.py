"""Fixtures of the decision log's tests: an isolated log on SQLite and on PostgreSQL.

PostgreSQL tests use ``NBA_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
they skip when it is unreachable, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from nba.log import DecisionLog

PG_URL = os.environ.get("NBA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    why = _postgres_reachable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} unreachable with CI set: {why}")
        pytest.skip(f"PostgreSQL unreachable: {why}")
    return PG_URL


@pytest.fixture
def log(db_url):
    """An isolated, empty log (own table namespace), dropped afterwards."""
    ns = f"t_{uuid.uuid4().hex[:12]}"
    store = DecisionLog(db_url, namespace=ns)
    try:
        yield store
    finally:
        store.drop()
        store.close()
