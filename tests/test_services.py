"""Servers: embedded ones on sockets (never 5432/6379), reused; unreachable ones fail clearly."""

import contextlib
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from skewless.services import redis as redis_service
from skewless.services.lifecycle import services


def test_embedded_or_external_servers_answer(svc, pg, rds):
    assert pg.execute("select 1").fetchone() == (1,)
    assert rds.ping()
    if svc.embedded_postgres:
        assert svc.postgres.is_socket, "embedded PostgreSQL must listen on a socket, not 5432"
    if svc.embedded_redis:
        assert svc.redis_url.startswith("unix://") or ":6379" not in svc.redis_url


def test_services_are_reused_within_and_across_processes(svc):
    assert services() is svc
    code = "from skewless.services import services; print(services().redis_url)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == svc.redis_url


def _status_with(**env: str) -> subprocess.CompletedProcess:
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    return subprocess.run(
        [skewless, "status"], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def test_unreachable_postgres_is_one_clear_line_with_password_masked():
    result = _status_with(SKEWLESS_POSTGRES_URL="postgresql://ann:hunter2@127.0.0.1:1/nowhere")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PostgreSQL at postgresql://ann:***@127.0.0.1:1/nowhere is unreachable" in lines[0]
    assert "SKEWLESS_POSTGRES_URL" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_unreachable_redis_is_one_clear_line_with_password_masked(svc):
    result = _status_with(
        SKEWLESS_POSTGRES_URL=svc.postgres_url, SKEWLESS_REDIS_URL="redis://:hunter2@127.0.0.1:1/0"
    )
    assert result.returncode == 2
    assert "Redis at redis://:***@127.0.0.1:1/0 is unreachable" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


# --- embedded Redis persistence -------------------------------------------------------------------


def _redis_pid(folder) -> int:
    return int((folder / "redis.pid").read_text())


def _sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"PID {pid} survived SIGKILL"
        time.sleep(0.05)


def test_embedded_redis_keeps_its_data_after_sigkill_and_restart(tmp_path):
    """Append-only file fsynced every second: a crash loses at most that last second."""
    folder = tmp_path / "redis"
    url = redis_service.start_embedded(folder)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("save")["save"].split() == list(redis_service.SAVE_POINTS)
        client.mset({f"k{i}": f"v{i}" for i in range(1000)})
        client.hset("h", mapping={"a": "1", "b": "2"})
        time.sleep(2.5)  # past the one-second fsync window
        _sigkill(_redis_pid(folder))
        assert redis_service.start_embedded(folder) == url
        assert client.dbsize() == 1001
        assert client.get("k999") == "v999"
        assert client.hgetall("h") == {"a": "1", "b": "2"}
    finally:
        redis_service.stop_embedded(folder)


def test_embedded_redis_from_an_older_skewless_keeps_its_snapshot_and_gains_persistence(tmp_path):
    """A folder with only dump.rdb (no append-only file) loads it; then the file is turned on."""
    folder = tmp_path / "redis"
    folder.mkdir()
    sock = folder / "old.sock"
    subprocess.run(
        [
            redis_service._binary(),
            "--daemonize",
            "yes",
            "--dir",
            str(folder),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--pidfile",
            str(folder / "old.pid"),
            "--appendonly",
            "no",
            "--save",
            "",
        ],
        check=True,
    )
    old = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 10
    while True:
        try:
            old.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    old.set("kept", "yes")
    with contextlib.suppress(redis.ConnectionError):
        old.shutdown(save=True)
    url = redis_service.start_embedded(folder)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.get("kept") == "yes"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        deadline = time.monotonic() + 10
        while (
            client.info("persistence")["aof_rewrite_in_progress"]
            or not (folder / redis_service.AOF_FILE).stat().st_size
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.5)
        _sigkill(_redis_pid(folder))
        (folder / redis_service.RDB_FILE).unlink()  # only the append-only file can bring it back
        url = redis_service.start_embedded(folder)
        assert redis.Redis.from_url(url, decode_responses=True).get("kept") == "yes"
    finally:
        redis_service.stop_embedded(folder)


# --- `skewless down` and stale PID files ----------------------------------------------------------


def _env_for(state_dir) -> dict[str, str]:
    """The environment of a command on embedded servers in `state_dir` (not the session's)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SKEWLESS_POSTGRES_URL", "SKEWLESS_REDIS_URL")
    }
    env["SKEWLESS_STATE_DIR"] = str(state_dir)
    return env


def _skewless(*args: str, state_dir, timeout: float = 180) -> subprocess.CompletedProcess:
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    return subprocess.run(
        [skewless, *args], capture_output=True, text=True, env=_env_for(state_dir), timeout=timeout
    )


@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_down_leaves_alone_a_process_that_now_holds_a_stale_pid(tmp_path, server):
    """After a crash the recorded PID may name anything: `down` must not signal it."""
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        state = tmp_path / "state"
        folder = state / server
        folder.mkdir(parents=True)
        started = int(time.time()) - 3600  # the crashed server started an hour ago
        if server == "postgres":
            (folder / "PG_VERSION").write_text("17\n")
            (folder / "postmaster.pid").write_text(
                f"{bystander.pid}\n{folder}\n{started}\n5432\n{folder}\n\n  1 2\nready   \n"
            )
            if os.geteuid() == 0:  # as it really is: the data folder belongs to the server's user
                entry = pwd.getpwnam("embedded_postgres")
                for path in (folder, folder / "PG_VERSION", folder / "postmaster.pid"):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
        else:
            (folder / "url").write_text(f"unix://{folder / 'redis.sock'}")
            (folder / "redis.pid").write_text(f"{bystander.pid}\n")
            (folder / "redis.proc").write_text(
                json.dumps(
                    {"pid": bystander.pid, "started": started, "exe": redis_service._binary()}
                )
            )
        result = _skewless("down", state_dir=state)
        time.sleep(0.5)
        assert bystander.poll() is None, "down signalled a process that is not its server"
        assert result.returncode == 0, result.stderr
        assert f"left PID {bystander.pid} alone" in result.stdout
        assert "stopped" not in result.stdout
    finally:
        bystander.kill()
        bystander.wait()


# --- long state folder paths ----------------------------------------------------------------------


def _inet_listeners(pid: int) -> list:
    return [c for c in psutil.Process(pid).net_connections(kind="inet") if c.status == "LISTEN"]


def test_long_state_folder_keeps_sockets_in_private_folders_without_tcp(tmp_path):
    """With a 150-character state folder the sockets cannot live in it: they go to short folders
    of mode 700 owned by the server's user, never to TCP, and everything works."""
    state = tmp_path / "s"
    state = Path(str(state) + "x" * (150 - len(str(state))))
    assert len(str(state)) == 150
    try:
        result = _skewless("status", state_dir=state)
        assert result.returncode == 0, result.stderr
        code = (
            "import json; from skewless.services import services; s = services();"
            "print(json.dumps([s.postgres.host, s.redis_url, s.postgres_url]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=_env_for(state)
        )
        assert out.returncode == 0, out.stderr
        pg_socket_dir, redis_url, pg_url = json.loads(out.stdout)
        assert redis_url.startswith("unix://"), redis_url
        redis_socket_dir = Path(redis_url.removeprefix("unix://")).parent
        pg_owner = (state / "postgres").stat().st_uid  # the server's user (not root)
        for folder, owner in ((Path(pg_socket_dir), pg_owner), (redis_socket_dir, os.getuid())):
            st = os.lstat(folder)
            assert stat.S_ISDIR(st.st_mode), folder
            assert stat.S_IMODE(st.st_mode) == 0o700, (folder, oct(st.st_mode))
            assert st.st_uid == owner, folder
        client = redis.Redis.from_url(redis_url)
        assert client.config_get("port") == {"port": "0"}
        assert not _inet_listeners(int((state / "redis" / "redis.pid").read_text()))
        assert client.set("k", "v") and client.get("k") == b"v"
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("",)
            assert conn.execute("select 1").fetchone() == (1,)
        postmaster = int((state / "postgres" / "postmaster.pid").read_text().split()[0])
        assert not _inet_listeners(postmaster)
        down = _skewless("down", state_dir=state)
        assert "stopped embedded PostgreSQL" in down.stdout, down.stdout + down.stderr
        assert "stopped embedded Redis" in down.stdout
        assert not Path(pg_socket_dir).exists() and not redis_socket_dir.exists()
    finally:
        _skewless("down", state_dir=state)


def test_killed_postgres_restarts_with_its_data_and_a_reused_pid_is_left_alone(tmp_path):
    """PostgreSQL SIGKILLed: the next command starts it again (crash recovery keeps committed
    rows), even when its old PID now belongs to another process, which is left alone."""
    state = tmp_path / "state"
    bystander = None
    try:
        up = _skewless("status", state_dir=state)
        assert up.returncode == 0, up.stderr
        url = up.stdout.split("PostgreSQL (embedded): ", 1)[1].split()[0]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table kept (n int)")
            conn.execute("insert into kept values (42)")
        pidfile = state / "postgres" / "postmaster.pid"
        lines = pidfile.read_text().splitlines()
        postmaster = psutil.Process(int(lines[0]))
        family = [postmaster, *postmaster.children()]
        postmaster.kill()
        psutil.wait_procs(family, timeout=30)
        bystander = subprocess.Popen(["sleep", "300"])
        pidfile.write_text("\n".join([str(bystander.pid), *lines[1:]]) + "\n")

        again = _skewless("status", state_dir=state)

        assert again.returncode == 0, again.stderr
        assert bystander.poll() is None
        url = again.stdout.split("PostgreSQL (embedded): ", 1)[1].split()[0]
        with psycopg.connect(url) as conn:
            assert conn.execute("select n from kept").fetchall() == [(42,)]
    finally:
        _skewless("down", state_dir=state)
        if bystander is not None:
            assert bystander.poll() is None, "a process holding a stale PID was signalled"
            bystander.kill()
            bystander.wait()


def test_a_socket_folder_someone_else_prepared_is_refused(tmp_path):
    """Never a socket in a folder that is a symlink, not ours, or open to others."""
    from skewless.errors import ServiceUnavailable
    from skewless.services.process import private_folder

    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for folder, problem in ((link, "not a folder"), (shared, "mode 777")):
        with pytest.raises(ServiceUnavailable, match=problem):
            private_folder(folder)
    made = private_folder(tmp_path / "fresh")
    assert stat.S_IMODE(os.lstat(made).st_mode) == 0o700
    assert private_folder(made) == made  # ours already: reused
