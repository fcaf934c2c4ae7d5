"""A PostgreSQL for benchmarks: ``--db-url``, else ``GHL_BENCH_PG_URL`` / ``GHL_TEST_PG_URL``, else a throwaway
cluster started from this machine's PostgreSQL server binaries (``/usr/lib/postgresql/*/bin``, as
``scripts/run-tests.sh`` does; fsync on, unlike the tests', so commits cost what they cost), else None.

Each caller gets its own schema (``fresh_schema``) so runs never see each other's rows."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench._common import free_port


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgres_url(given: str | None = None) -> Iterator[str | None]:
    """A server URL (database ``ghl``), or None when there is none on this machine."""
    url = given or os.environ.get("GHL_BENCH_PG_URL") or os.environ.get("GHL_TEST_PG_URL")
    if url:
        yield url
        return
    bin_dir = _server_bin()
    if bin_dir is None:
        yield None
        return
    work = Path(tempfile.mkdtemp(prefix="ghl-bench-pg."))
    os.chmod(work, 0o755)
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        as_pg = ["runuser", "-u", "postgres", "--"]
    data = work / "pg"
    data.mkdir()
    if as_pg:
        shutil.chown(data, "postgres")
    port = free_port()
    started = False
    try:
        subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-U", "ghl", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                        f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c max_connections=200", "start"],
                       check=True, capture_output=True)
        started = True
        subprocess.run([*as_pg, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ghl", "ghl"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://ghl@127.0.0.1:{port}/ghl"
    finally:
        if started:
            subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def fresh_schema(server_url: str, prefix: str = "bench") -> str:
    """``server_url`` pointed at a new empty schema (search_path), for one run."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


__all__ = ["fresh_schema", "postgres_url"]
