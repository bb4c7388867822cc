"""Connection URLs: parse once, print masked, derive the forms each client wants."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit


def mask(url: str) -> str:
    """The URL with its password replaced by `***`, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL server and database, host being a name or a Unix socket folder."""

    host: str
    port: int
    user: str
    password: str
    database: str
    query: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> PostgresTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
            raise ValueError(f"not a PostgreSQL URL: {mask(url)}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host = query.pop("host", None) or parts.hostname or "localhost"
        return cls(
            host=unquote(host),
            port=int(query.pop("port", None) or parts.port or 5432),
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or "postgres",
            query=query,
        )

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    def url(self, scheme: str = "postgresql", database: str | None = None) -> str:
        """A URL for `scheme`; socket folders travel in `?host=` which libpq and psycopg2 accept."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        query = dict(self.query)
        if self.is_socket:
            query["host"] = self.host
            query["port"] = str(self.port)
            netloc = f"{auth}@"
        else:
            netloc = f"{auth}@{self.host}:{self.port}"
        return urlunsplit((scheme, netloc, "/" + (database or self.database), urlencode(query), ""))

    @property
    def dagster_url(self) -> str:
        """For dagster-postgres: psycopg2, since SQLAlchemy 2.1's psycopg 3 default breaks NOTIFY.

        Dagster commits each event on its own connection (two commits per event, a planned event
        per partition and asset): waiting for the WAL flush on each made a year's run spend most
        of a minute before its first step. Its connections commit asynchronously; a crash can lose
        the last moments of the event log, never feature data, whose connections are untouched.
        """
        tuned = PostgresTarget(
            self.host,
            self.port,
            self.user,
            self.password,
            self.database,
            {**self.query, "options": "-c synchronous_commit=off"},
        )
        return tuned.url("postgresql+psycopg2")

    def dbt_env(self) -> dict[str, str]:
        """The variables `dbt_project/profiles.yml` reads."""
        return {
            "SKEWLESS_PG_HOST": self.host,
            "SKEWLESS_PG_PORT": str(self.port),
            "SKEWLESS_PG_USER": self.user,
            "SKEWLESS_PG_PASSWORD": self.password,
            "SKEWLESS_PG_DATABASE": self.database,
            "SKEWLESS_PG_SSLMODE": self.query.get("sslmode", "prefer"),
        }
