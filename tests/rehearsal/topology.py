"""The cluster's topology on 127.0.0.1, with the engines a cluster runs: a throw-away PostgreSQL,
an S3 server (moto), and MLflow's tracking server started by the script the Kubernetes manifest
runs (manifests/mlflow/mlflow-server.sh), with the manifest's settings: PostgreSQL for runs and
the registry, S3 for artifacts, served through MLflow, behind its basic-auth app."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from digitops.net import free_port

from ..serving_helpers import aws_env, running_moto, running_server, s3_client

REPO = Path(__file__).resolve().parents[2]
MLFLOW_SERVER = REPO / "manifests" / "mlflow" / "mlflow-server.sh"
BUCKET = "mlflow"  # as manifests/mlflow/minio.yaml makes it
# A cluster that is thrown away after the run: no durability work.
INITDB = ("-E", "UTF8", "--no-locale", "--no-sync")
THROWAWAY = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
LOGIN = {"MLFLOW_TRACKING_USERNAME": "digitops", "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(12)}


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL programs (the newest installed), or None."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def running_postgres(work: Path) -> Iterator[str]:
    """A PostgreSQL cluster made with initdb in a temporary directory, on a free port, with a
    database `mlflow`; yields its URI and deletes it afterwards. PostgreSQL refuses to run as
    root, so as root it runs as the `postgres` user, as Debian's service does."""
    bin_dir = postgres_bin()
    assert bin_dir is not None, "no PostgreSQL: apt-get install postgresql"
    user: dict[str, Any] = {"user": "postgres", "group": "postgres"} if os.getuid() == 0 else {}
    # Not under pytest's temporary folder: the postgres user cannot enter root's.
    data = Path(tempfile.mkdtemp(prefix="digitops-pg-", dir="/tmp"))
    if user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    log = work / f"postgres-{port}.log"
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data / "db", "-U", "mlflow", "-A", "trust", *INITDB],
            check=True,
            capture_output=True,
            **user,
        )
        with open(log, "w") as stream:
            listen = ("-h", "127.0.0.1", "-p", str(port), "-k", data)
            server = subprocess.Popen(
                [bin_dir / "postgres", "-D", data / "db", *listen, *THROWAWAY],
                stdout=stream,
                stderr=subprocess.STDOUT,
                **user,
            )
        try:

            def ready() -> bool:
                if server.poll() is not None:
                    raise RuntimeError(f"PostgreSQL ended:\n{log.read_text()}")
                probe = [bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
                return subprocess.run(probe, check=False).returncode == 0

            Retrying(
                stop=stop_after_delay(60),
                wait=wait_fixed(0.3),
                retry=retry_if_result(lambda answered: not answered),
            )(ready)
            subprocess.run(
                [
                    bin_dir / "createdb",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "mlflow",
                    "mlflow",
                ],
                check=True,
                capture_output=True,
            )
            yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
        finally:
            server.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
            server.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def rows(postgres: str, query: str, *args: object) -> list[tuple]:
    """The rows `query` returns from the rehearsal's PostgreSQL (its SQLAlchemy URI)."""
    import psycopg2

    dsn = postgres.replace("+psycopg2", "")
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(query, args)
        return cursor.fetchall()


def bucket_keys(s3: str) -> list[str]:
    """Every key in the artifact bucket of the S3 server at `s3`."""
    pages = s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@dataclass(frozen=True)
class Tracking:
    """The tracking side of the rehearsal: where each part listens."""

    url: str  # MLflow's tracking server
    postgres: str  # its backend store
    s3: str  # the S3 endpoint holding its artifacts, in bucket BUCKET
    work: Path  # the server's working directory

    def client_env(self) -> dict[str, str]:
        """What a client needs, as a pod has it: the tracking URI and the login, no S3."""
        return {"MLFLOW_TRACKING_URI": self.url, **LOGIN}


@contextmanager
def running_tracking(work: Path) -> Iterator[Tracking]:
    """PostgreSQL, an S3 server with the artifact bucket, and MLflow's tracking server on them,
    started by manifests/mlflow/mlflow-server.sh; stopped afterwards."""
    with running_postgres(work) as postgres, running_moto(work) as s3:
        s3_client(s3).create_bucket(Bucket=BUCKET)
        with running_mlflow(work, postgres, s3) as url:
            yield Tracking(url, postgres, s3, work)


@contextmanager
def running_mlflow(work: Path, postgres: str, s3: str, port: int | None = None) -> Iterator[str]:
    """MLflow's tracking server on `postgres` and the bucket of `s3`, as the manifest runs it,
    on `port` (default: a free one; the port it had, to start it again); yields its URL."""
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": postgres,
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}",
        "MLFLOW_S3_ENDPOINT_URL": s3,
        **aws_env(s3),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_ALLOWED_HOSTS": "localhost:*,127.0.0.1:*",
        "MLFLOW_WORKERS": "2",
        "MLFLOW_AUTH_ADMIN_USERNAME": LOGIN["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": LOGIN["MLFLOW_TRACKING_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(24),
        "MLFLOW_AUTH_CONFIG_PATH": str(work / "auth.ini"),
    }
    with running_server(
        "mlflow",
        lambda port: ["env", f"MLFLOW_PORT={port}", "sh", str(MLFLOW_SERVER)],
        "/health",
        work,
        env,
        timeout_s=120,
        port=port,
    ) as url:
        yield url


@dataclass(frozen=True)
class RayCluster:
    address: str  # the head's GCS address: for drivers on a node's machine
    client_address: str  # Ray Client's (ray://), for drivers elsewhere, as task containers are
    node_ids: list[str]
    env: dict[str, str]  # what a driver needs besides the address: the cluster's token


# Prints the ids of the cluster's live nodes, from a driver of its own (the test's process keeps
# out of Ray: a `ray.init` here would hold the cluster under the search's feet).
_NODES = (
    "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
    "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
)


@contextmanager
def running_ray_cluster(work: Path, nodes: int = 2) -> Iterator[RayCluster]:
    """A Ray cluster of `nodes` nodes on this machine with one CPU each: `ray start --head`,
    then nodes joining it, as KubeRay starts its pods. Each node runs `--block` in a process of
    its own, and stopping that process stops the node (`ray stop` would stop every Ray process
    on the machine)."""
    ray = str(Path(sys.executable).with_name("ray"))
    # Ray's socket paths live under its temp dir and must stay short: not pytest's folder.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    port, client_port = free_port(), free_port()
    each = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = [ray, "start", "--head", "--port", str(port), "--temp-dir", temp]
    head += ["--include-dashboard", "false", "--ray-client-server-port", str(client_port)]
    # `ray start --head` turns token authentication on (Ray 2.60): every node and driver needs
    # the cluster's token, as on a real cluster, where it would come from a secret.
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    started: list[subprocess.Popen] = []
    try:
        for i in range(nodes):
            command = head if i == 0 else [ray, "start", "--address", f"127.0.0.1:{port}"]
            # Every node's agent would take port 52365: give each one of its own.
            agent = ["--dashboard-agent-listen-port", str(free_port())]
            with open(work / f"ray-node-{i}.log", "w") as log:
                started.append(
                    subprocess.Popen(
                        [*command, *each, *agent, "--block"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=os.environ | env,
                    )
                )
        address = f"127.0.0.1:{port}"

        def alive() -> list[str]:
            for i, process in enumerate(started):
                if process.poll() is not None:
                    raise RuntimeError((work / f"ray-node-{i}.log").read_text())
            listed = subprocess.run(
                [sys.executable, "-c", _NODES, address],
                capture_output=True,
                text=True,
                env=os.environ | env,
            )
            return json.loads(listed.stdout) if listed.returncode == 0 else []

        node_ids = Retrying(
            stop=stop_after_delay(120),
            wait=wait_fixed(1),
            retry=retry_if_result(lambda ids: len(ids) < nodes),
        )(alive)
        yield RayCluster(address, f"ray://127.0.0.1:{client_port}", node_ids, env)
    finally:
        for process in reversed(started):  # the joined nodes first, the head last
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
