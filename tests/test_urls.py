from skewless.urls import PostgresTarget, mask


def test_mask_hides_password_only():
    assert mask("postgresql://ann:s3cret@db:5432/x?sslmode=require") == (
        "postgresql://ann:***@db:5432/x?sslmode=require"
    )
    assert mask("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def test_socket_url_round_trips_for_each_client():
    target = PostgresTarget.parse("postgresql://postgres@/skewless?host=/tmp/pg%20dir&port=5433")
    assert (target.host, target.port, target.database) == ("/tmp/pg dir", 5433, "skewless")
    again = PostgresTarget.parse(target.url())
    assert again == target
    assert target.dagster_url.startswith("postgresql+psycopg2://postgres@/skewless?")
    assert target.dbt_env()["SKEWLESS_PG_HOST"] == "/tmp/pg dir"


def test_tcp_url_keeps_password_and_sslmode():
    target = PostgresTarget.parse("postgresql://u:p%40ss@db.example:6543/feat?sslmode=require")
    assert (target.user, target.password, target.host, target.port) == (
        "u",
        "p@ss",
        "db.example",
        6543,
    )
    assert target.dbt_env()["SKEWLESS_PG_SSLMODE"] == "require"
    assert PostgresTarget.parse(target.url()) == target
