"""The production instance: Dagster on dagster_home/dagster-postgres.yaml, as documented,
against a real PostgreSQL server this test starts (Debian's `postgresql` package;
`.ci/run` installs it). Runs, events, check results and corpora live in PostgreSQL
and a second instance reads them back."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from curation.pipelines.assets import documents
from curation.pipelines.checks import documents_accounted, quarantine_rate
from curation.pipelines.corpora import CORPORA
from tests.pipelines.helpers import register, resources, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD, DATABASE = "curation", "curation-test-password", "dagster"


def _server_programs() -> tuple[str, str] | None:
    """initdb and postgres: on PATH, or where Debian puts them (/usr/lib/postgresql/N/bin)."""
    folders = [str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])]
    folders += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in folders:
        initdb, postgres = Path(folder, "initdb"), Path(folder, "postgres")
        if initdb.exists() and postgres.exists():
            return str(initdb), str(postgres)
    return None


def _run_as() -> list[str]:
    """PostgreSQL refuses to run as root: then run it as the `postgres` account."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' account to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    programs = _server_programs()
    if programs is None:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip(
        "dagster_postgres", reason="dagster-postgres is not installed: pip install '.[postgres]'"
    )
    psycopg2 = pytest.importorskip("psycopg2")
    initdb, postgres = programs
    run_as = _run_as()
    # Not under pytest's private temp folder: the server's account must reach its files.
    root = Path(tempfile.mkdtemp(prefix="curation-postgres-"))
    root.chmod(0o755)
    (root / "password").write_text(PASSWORD)
    if run_as:
        account = pwd.getpwnam("postgres")
        for path in (root, root / "password"):
            os.chown(path, account.pw_uid, account.pw_gid)
    subprocess.run(
        [*run_as, initdb, "-D", str(root / "data"), "-U", USER, f"--pwfile={root / 'password'}",
         "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(
            [*run_as, postgres, "-D", str(root / "data"), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        connect = dict(host="127.0.0.1", port=port, user=USER, password=PASSWORD)
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg2.connect(dbname="postgres", **connect)
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.3)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
        yield {**connect, "dbname": DATABASE}
    finally:
        _stop(server)
        shutil.rmtree(root, ignore_errors=True)


def _stop(server: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT) of the server's whole process group, then SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def test_the_documented_postgres_instance_keeps_runs_events_checks_and_corpora(
    postgres_server, tmp_path, monkeypatch, real_texts
):
    import psycopg2

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster-postgres.yaml", home / "dagster.yaml")
    for name, value in (("HOST", "127.0.0.1"), ("PORT", postgres_server["port"]), ("DB", DATABASE),
                        ("USER", USER), ("PASSWORD", PASSWORD)):  # fmt: skip
        monkeypatch.setenv(f"DAGSTER_PG_{name}", str(value))
    write_jsonl(tmp_path / "notes.jsonl", real_texts[:20])
    config = {"ops": {"documents": {"config": {"inputs": [str(tmp_path / "notes.jsonl")]}}}}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        register(instance, "notes")
        result = dg.materialize(
            [documents, documents_accounted, quarantine_rate],
            instance=instance,
            partition_key="notes",
            resources=resources(tmp_path / "store"),
            run_config=config,
        )
    assert result.success
    # A second instance, as another process (the webserver, the daemon) would open it.
    with dg.DagsterInstance.from_config(str(home)) as again:
        assert again.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert again.get_dynamic_partitions(CORPORA) == ["notes"]
        event = again.get_latest_materialization_event(dg.AssetKey("documents"))
        assert event.asset_materialization.partition == "notes"
        assert event.asset_materialization.metadata["documents"].value == 20
        checks = again.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("documents"), "documents_accounted")]
        )
        assert [c.status.value for c in checks.values()] == ["SUCCEEDED"]
    with psycopg2.connect(**postgres_server) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [("SUCCESS",)]
