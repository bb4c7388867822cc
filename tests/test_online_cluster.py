"""The online store on a real three-node Redis Cluster: writes grouped by slot, reads per slot.

The nodes are the embedded `redis-server` binary started in cluster mode on free loopback ports
(a cluster needs TCP for its bus); slots are assigned with CLUSTER ADDSLOTS and the nodes joined
with CLUSTER MEET, so no `redis-cli` is needed.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from skewless.online.keys import entity_key
from skewless.online.reader import PRESENT, get_online_features
from skewless.online.writer import materialize_view, write_rows
from skewless.registry import Feature, FeatureView, Registry
from skewless.services.redis import _binary

T0 = datetime(2013, 1, 1, tzinfo=UTC)
VIEWS = [
    FeatureView(
        name=name,
        version=1,
        schema="scratch_cluster",
        table=name,
        entity=("carrier",),
        entity_types=("text",),
        features=(Feature("x", "double precision", ""), Feature("n", "bigint", "")),
        ttl=timedelta(days=1),
        freshness_sla=timedelta(days=2),
        owner="tests",
        description="",
    )
    for name in ("alpha", "beta")
]


@pytest.fixture(scope="module")
def cluster():
    folder = Path(tempfile.mkdtemp(prefix="skewless-cluster-"))
    ports = _cluster_ports(3)
    procs = []
    try:
        for port in ports:
            node = folder / str(port)
            node.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        _binary(),
                        "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                        "--cluster-config-file", str(node / "nodes.conf"), "--dir", str(node),
                        "--save", "", "--appendonly", "no", "--protected-mode", "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        clients = [redis.Redis(port=p) for p in ports]
        for c in clients:
            _wait(lambda c=c: c.ping())
        share = 16384 // 3
        for i, c in enumerate(clients):
            end = 16384 if i == 2 else (i + 1) * share
            c.execute_command("CLUSTER ADDSLOTS", *range(i * share, end))
        for c in clients[1:]:
            c.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        _wait(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients))
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
        yield client
        client.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _cluster_ports(n: int) -> list[int]:
    """Ports free together with their cluster bus port (port + 10000, so below 55536)."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < n:
        port = rng.randint(20000, 50000)
        if port not in ports and all(_free(p) for p in (port, port + 10000)):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(ready, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the test cluster did not come up")
        time.sleep(0.1)


def test_writes_and_reads_span_every_node_of_a_cluster(cluster, pg):
    carriers = [f"C{i:03d}" for i in range(300)]  # spread over all three nodes' slots
    pg.execute("create schema if not exists scratch_cluster")
    for view in VIEWS:
        pg.execute(f"drop table if exists {view.relation}")
        pg.execute(
            f"create table {view.relation} (carrier text, feature_ts timestamptz,"
            " created_at timestamptz, x double precision, n bigint)"
        )
    pg.commit()
    try:
        rows = [(c, T0, T0, i / 4, i) for i, c in enumerate(carriers)]
        with pg.cursor() as cur:
            cur.executemany(f"insert into {VIEWS[0].relation} values (%s, %s, %s, %s, %s)", rows)
        pg.commit()
        result = materialize_view(pg, cluster, "cl", VIEWS[0], now=T0 + timedelta(hours=1))
        assert (result.entities, result.written) == (300, 300)
        # the second view gets pushes; one entity's keys of both views share a slot
        write_rows(cluster, "cl", VIEWS[1], rows, now=T0 + timedelta(hours=1))
        nodes = {
            cluster.get_node_from_key(entity_key("cl", "alpha_v1", [c])).name for c in carriers
        }
        assert len(nodes) == 3
        for c in carriers[:20]:
            assert cluster.keyslot(entity_key("cl", "alpha_v1", [c])) == cluster.keyslot(
                entity_key("cl", "beta_v1", [c])
            )
        read = get_online_features(
            cluster,
            Registry(VIEWS),
            "cl",
            [{"carrier": c} for c in carriers],
            ["alpha:x", "beta:n"],
            now=T0 + timedelta(hours=2),
        )
        assert read.columns["alpha_v1:x"] == [i / 4 for i in range(300)]
        assert read.columns["beta_v1:n"] == list(range(300))
        assert set(read.statuses["alpha_v1:x"]) == {PRESENT}
        # newest wins on the cluster too: an older push changes nothing
        older = [(c, T0 - timedelta(hours=1), T0, -1.0, -1) for c in carriers]
        assert write_rows(cluster, "cl", VIEWS[0], older, now=T0).written == 0
        again = materialize_view(pg, cluster, "cl", replace(VIEWS[0]), now=T0 + timedelta(hours=1))
        assert again.mode == "incremental" and again.written == 0
    finally:
        pg.rollback()
        pg.execute("drop schema scratch_cluster cascade")
        pg.commit()
