"""Alembic environment of the store: runs on the connection store.db.upgrade passes in, else on the URL of
the Alembic config or DATABASE_URL (the alembic command line, with store/alembic.ini)."""

from __future__ import annotations

from alembic import context

from store.db import database_url, make_engine
from store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    url = kwargs.get("url") or kwargs["connection"].engine.url
    context.configure(target_metadata=target_metadata, render_as_batch=url.get_backend_name() == "sqlite",
                      compare_type=True, **kwargs)


def _url():
    from sqlalchemy.engine import make_url

    return make_url(database_url(config.get_main_option("sqlalchemy.url")))


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(str(_url()))
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
