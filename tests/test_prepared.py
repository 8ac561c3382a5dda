"""Prepared statements (agent/store/prepared.py): the missed call's statements run on the
driver's cursor must store and read exactly what SQLAlchemy's own execution would, on
SQLite and PostgreSQL, and fail the same way."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from agent.store.db import DbRunner, make_engine, migrate
from agent.store.models import Contact, Message
from agent.store.prepared import Prepared, inserting_new

DATABASES = ("sqlite", "postgresql")

CONTACTS = Contact.__table__
T0 = dt.datetime(2026, 3, 8, 7, 59, 59, 999_999, tzinfo=dt.UTC)
ADD_CONTACT = inserting_new(CONTACTS, CONTACTS.c.number, keys=(
    "number", "name", "created_at", "tags", "source", "opted_out", "conversation_status"))
FIND = Prepared(select(CONTACTS.c.id, CONTACTS.c.name, CONTACTS.c.created_at, CONTACTS.c.tags,
                       CONTACTS.c.opted_out).where(CONTACTS.c.number == bindparam("wanted")))


def test_a_row_written_and_read_back_is_what_the_orm_sees(session: Session) -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    new_id = ADD_CONTACT.scalar(session, {
        "number": "+15550000001", "name": "Seán O'Brien", "created_at": T0.astimezone(tokyo),
        "tags": ["vip", "roof"], "source": "call", "opted_out": True,
        "conversation_status": "open"})
    session.commit()
    contact = session.get_one(Contact, new_id)
    assert (contact.name, contact.tags, contact.opted_out, contact.created_at) == (
        "Seán O'Brien", ["vip", "roof"], True, T0)
    assert contact.created_at.tzinfo == dt.UTC  # aware UTC, as every column reads back
    assert FIND.first(session, {"wanted": "+15550000001"}) == (
        new_id, "Seán O'Brien", T0, ["vip", "roof"], True)
    assert FIND.first(session, {"wanted": "+15550000002"}) is None


def test_a_duplicate_insert_returns_no_id_and_keeps_the_transaction(session: Session) -> None:
    fields = {"number": "+15550000001", "name": None, "created_at": T0, "tags": [],
              "source": "call", "opted_out": False, "conversation_status": "open"}
    first = ADD_CONTACT.scalar(session, fields)
    assert ADD_CONTACT.scalar(session, {**fields, "name": "Second"}) is None
    session.commit()  # the duplicate did not abort the transaction
    assert session.scalars(select(Contact.name)).all() == [None]
    assert first is not None


def test_statements_bind_their_own_values_and_count_rows(session: Session) -> None:
    for number in ("+15550000001", "+15550000002"):
        ADD_CONTACT.scalar(session, {
            "number": number, "name": None, "created_at": T0, "tags": [], "source": "call",
            "opted_out": False, "conversation_status": "closed"})
    reopen = Prepared(update(CONTACTS).where(CONTACTS.c.number == bindparam("wanted"),
                                             CONTACTS.c.conversation_status == "closed")
                      .values(conversation_status="open", last_message_at=bindparam("at")))
    assert reopen.count(session, {"wanted": "+15550000001", "at": T0}) == 1
    assert reopen.count(session, {"wanted": "+15550000001", "at": T0}) == 0  # open now
    newest = Prepared(select(func.max(CONTACTS.c.last_message_at)))
    assert newest.scalar(session, {}) == T0
    session.commit()
    assert session.scalars(select(Contact.conversation_status)
                           .order_by(Contact.number)).all() == ["open", "closed"]


def test_several_rows_at_once(session: Session) -> None:
    add = Prepared(insert(CONTACTS), keys=(
        "number", "name", "created_at", "tags", "source", "opted_out", "conversation_status"))
    add.many(session, [{"number": f"+1555000000{n}", "name": f"n{n}", "created_at": T0,
                        "tags": [str(n)], "source": "text", "opted_out": False,
                        "conversation_status": "open"} for n in range(3)])
    session.commit()
    assert session.scalars(select(Contact.tags).order_by(Contact.number)).all() == [
        ["0"], ["1"], ["2"]]


def test_a_column_default_it_would_skip_is_refused_by_name(session: Session) -> None:
    # the ORM fills Contact.source and .tags itself; left out here they would be NULL
    missing = Prepared(insert(CONTACTS), keys=("number", "created_at", "opted_out",
                                               "conversation_status"))
    with pytest.raises(ValueError, match=r"contacts\.tags.*contacts\.source|contacts\.source"):
        missing.scalar(session, {"number": "+15550000001", "created_at": T0,
                                 "opted_out": False, "conversation_status": "open"})


@pytest.mark.databases("sqlite")
def test_a_locked_database_is_sqlalchemys_operational_error(tmp_path: Path) -> None:
    # the agent retries a decision on OperationalError (agent.store.db.UNAVAILABLE): the
    # driver's own error must arrive as that, whichever way the statement ran
    path = tmp_path / "locked.sqlite"
    engine: Engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN IMMEDIATE")
    engine = make_engine(f"sqlite:///{path}")
    runner = DbRunner(engine)
    fields = {"number": "+15550000001", "name": None, "created_at": T0, "tags": [],
              "source": "call", "opted_out": False, "conversation_status": "open"}
    try:
        timer = threading.Timer(5.0, blocker.rollback)  # never hang the suite
        timer.start()
        with Session(engine) as session:
            session.connection().exec_driver_sql("PRAGMA busy_timeout=50")
            with pytest.raises(OperationalError, match="locked"):
                ADD_CONTACT.scalar(session, fields)
        timer.cancel()
        blocker.rollback()
        assert runner.run(lambda s: ADD_CONTACT.scalar(s, fields)) is not None
    finally:
        blocker.close()
        runner.close()


def test_the_db_runner_keeps_one_connection_per_thread(engine: Engine) -> None:
    runner = DbRunner(engine)
    try:
        seen = {runner.run(lambda s: id(s.connection().connection.dbapi_connection))
                for _ in range(3)}
        assert len(seen) == 1
        assert runner.run(lambda s: s.scalar(select(func.count()).select_from(Message))) == 0
    finally:
        runner.close()


@pytest.mark.databases("postgresql")
def test_a_connection_the_server_dropped_is_replaced_and_the_work_run_again(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    runner = DbRunner(engine)
    try:
        pid = runner.run(lambda s: s.connection().exec_driver_sql(
            "SELECT pg_backend_pid()").scalar())
        with engine.connect() as other:  # what a server restart does to a connection
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        runs: list[int] = []

        def work(s: Session) -> int:
            runs.append(1)
            return int(s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar())

        assert runner.run(work) != pid
        assert len(runs) == 2  # the first try died with the old connection
        assert "connection was lost" in caplog.text
    finally:
        runner.close()
