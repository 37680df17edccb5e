from __future__ import annotations

import sqlalchemy as sa


def test_postgres_url_gives_an_isolated_schema(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table probe (id int)"))
        schema = conn.execute(sa.text("select current_schema()")).scalar_one()
    engine.dispose()
    assert schema.startswith("t_")
