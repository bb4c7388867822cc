"""The stream worker's pipelined Redis connections: Redis works while the worker's Python does.

A step that waits for each reply leaves Redis idle while Python validates and encodes, then
Python idle while Redis reads entries and applies the online writes. The worker's loop instead
keeps two connections of the client's pool with commands in flight:

- `reader`: the XREADGROUP of the next batch: with entries waiting (a full batch read), sent as
  soon as the current one is in hand (Redis builds the reply while Python works on the current
  batch); caught up, sent once the current batch is committed offline, just before its online
  writes, so that it takes every entry that arrived while the batch was processed (for
  freshness: read ahead, an entry that arrives meanwhile waits for the batch after);
- `writer`: a batch's online writes (and dead letters), sent once its events are committed
  offline, their replies read one batch later; only then, those writes confirmed, are its
  entries acknowledged (XACK), in the next send on the same connection.

Commands are sent raw (packed once, no health-check PING slipped between them) and the replies
read in the order sent. `Recorder` stands for the Redis client of the online writes and records
the commands they would send (`ingest.store` publishes through it).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack = None


class Recorder:
    """A stand-in for a Redis client (and its pipelines) that records the commands sent through
    it instead of sending them: `execute_command`, `eval`, `evalsha`, `pipeline().execute()`."""

    def __init__(self) -> None:
        self.commands: list[tuple] = []

    def pipeline(self, transaction: bool = True) -> Recorder:
        return self

    def execute_command(self, *args: object, **_: object) -> Recorder:
        self.commands.append(args)
        return self

    def eval(self, script: str, numkeys: int, *keys_and_args: object) -> Recorder:
        return self.execute_command("EVAL", script, numkeys, *keys_and_args)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: object) -> Recorder:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def execute(self, raise_on_error: bool = True) -> list:
        return []


class Channel:
    """One connection of the pool with commands in flight; replies are read in the order the
    commands were sent."""

    def __init__(self, pool: redis.ConnectionPool):
        self.pool = pool
        self.conn = pool.get_connection()
        self.in_flight = 0

    def send(self, commands: Sequence[tuple]) -> None:
        if not commands:
            return
        if _pack is not None:
            data = [b"".join(_pack(c) for c in commands)]
        else:
            data = self.conn.pack_commands(commands)
        self.conn.send_packed_command(data, check_health=False)
        self.in_flight += len(commands)

    def replies(self, n: int | None = None, *, raw: bool = False) -> list:
        """The next `n` replies (all in flight by default); an error reply is answered as its
        exception (the later replies are read all the same)."""
        n = self.in_flight if n is None else n
        out: list = []
        for _ in range(n):
            self.in_flight -= 1
            try:
                out.append(self.conn.read_response(disable_decoding=raw))
            except redis.ResponseError as err:
                out.append(err)
        return out

    def close(self) -> None:
        """Replies still in flight are dropped with the connection."""
        if self.in_flight:
            self.conn.disconnect()
            self.in_flight = 0
        self.pool.release(self.conn)
