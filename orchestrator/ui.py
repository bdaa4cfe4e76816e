"""``sotalign ui``: the MLflow UI for the project's tracking store.

For a sqlite store it starts ``mlflow server`` on loopback and waits for it; for a server URI it
only prints links. On a cluster's head (cluster.yaml) it is the tracking server every node logs
to: ``--host 0.0.0.0 --auth`` (MLflow's basic-auth app: every request logs in, as the cluster's runs do
with ``~/.mlflow/credentials``; beyond loopback a server takes ``--auth`` or an explicit ``--no-auth``), artifacts proxied to ``--artifacts-destination`` (a folder, or ``s3://BUCKET/PREFIX``
with the AWS environment: ``AWS_ENDPOINT_URL`` for an S3-compatible store, checked reachable before the
server starts), and ``--stop-with-ray``
ends it with the head's Ray node, so that ``ray stop`` / ``ray down`` leave nothing running. The links go straight to the runs table (``#/experiments/<id>/runs``): MLflow
3.17 opens in GenAI mode otherwise (docs/notes/stack.md).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.credentials import server_login, write_private
from orchestrator.tracking import PAIRS_VIEW, client, ensure_reachable, runs_link, tracking_uri
from sotalign.checks import InputError
from sotalign.data import fs

RAY_POLL_S = 2.0  # how often --stop-with-ray looks for the raylet: the server outlives `ray stop` by at most this


def add_parser(commands) -> None:
    p = commands.add_parser("ui", help="start the MLflow UI on the project's tracking store and print the runs links")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default loopback)")
    p.add_argument(
        "--artifacts-destination",
        default=None,
        help="where the server stores the artifacts that clients send it: a folder or s3://BUCKET/PREFIX "
        "(default: mlartifacts/ beside the sqlite file)",
    )
    p.add_argument(
        "--stop-with-ray",
        action="store_true",
        help="stop serving when this machine's Ray node stops (`ray stop`, `ray down`): the cluster files' head server",
    )
    p.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="HOST[:PORT],...",
        help="Host headers the server accepts besides MLflow's defaults (loopback, private IPs) and, when serving "
        "beyond loopback, this machine's own addresses: e.g. mlflow.mylab.org",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="ask every client for the MLflow login (MLflow's basic-auth app): its admin is MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials (`sotalign cluster-secrets` makes one), which the "
        "cluster's drivers and workers log in with; required to serve beyond loopback",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve beyond loopback without a login: anyone who reaches the port can read and delete every run",
    )
    p.add_argument(
        "--background",
        action="store_true",
        help="return once the server answers, leaving it running in its own session (a cluster's head commands)",
    )
    p.set_defaults(run=run)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InputError(f"mlflow server exited with code {process.returncode} (port in use?)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise InputError(f"mlflow server did not answer {url}/health within {timeout:.0f} s")


def _ray_node_running() -> bool:
    """Whether a raylet of this user runs on this machine (``ray stop`` kills it)."""
    import psutil

    me = os.getuid()
    for process in psutil.process_iter(["name", "uids"]):
        if process.info["name"] == "raylet" and process.info["uids"] and process.info["uids"].real == me:
            return True
    return False


def _allowed_hosts(host: str, extra: str | None) -> str:
    """MLflow 3.17 answers 403 to a Host header outside its list (DNS-rebinding protection), which by
    default holds loopback and private IP ranges only: a head at a public address would refuse its
    own cluster. Serving beyond loopback adds this machine's addresses; ``extra`` adds names."""
    import psutil
    from mlflow.server.security_utils import get_default_allowed_hosts

    hosts = get_default_allowed_hosts()
    if host not in ("127.0.0.1", "localhost", "::1"):
        own = {
            a.address.split("%")[0]
            for addresses in psutil.net_if_addrs().values()
            for a in addresses
            if a.family in (socket.AF_INET, socket.AF_INET6)
        }
        hosts += [f"{a}:*" if ":" not in a else f"[[]{a}]:*" for a in sorted(own)]
    hosts += [h.strip() for h in (extra or "").split(",") if h.strip()]
    return ",".join(dict.fromkeys(hosts))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_exposure(args: argparse.Namespace) -> None:
    """Beyond loopback a server without a login lets anyone who reaches it read and delete every run:
    it takes ``--auth``, or ``--no-auth`` said out loud."""
    if args.auth and args.no_auth:
        raise InputError("--auth and --no-auth contradict each other: choose one")
    if args.host not in LOOPBACK and not (args.auth or args.no_auth):
        raise InputError(
            f"--host {args.host} serves beyond this machine: add --auth (clients then log in, see "
            "`sotalign ui --help`), or --no-auth to serve every run to anyone who reaches the port"
        )


def _auth_settings(store: str) -> dict[str, str]:
    """The basic-auth app's environment (never its command line, which ``ps`` shows): its config and user
    database beside the sqlite store, a CSRF key kept there (made once), and the admin's login."""
    user, password = server_login()
    folder = Path(store.removeprefix("sqlite:///")).resolve().parent
    config = folder / "basic_auth.ini"
    # READ for users other than the admin: the cluster's runs log as the admin (docs/tracking.md)
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    key_file = folder / "flask_secret_key"
    if not key_file.exists():
        write_private(key_file, secrets.token_hex(32))
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key_file.read_text().strip(),
    }


WRONG_LOGIN = (
    "the server refuses this MLflow login: its admin was made with another password at its first start "
    "(basic_auth.db beside the store); put that password back in ~/.mlflow/credentials (and on every node), "
    "or change the admin's with MLflow's users/update-password API"
)


def _login_accepted(server: str, auth: dict[str, str]) -> bool:
    """Whether the server takes the admin login it was started with (the admin is made only on its first start)."""
    login = f"{auth['MLFLOW_AUTH_ADMIN_USERNAME']}:{auth['MLFLOW_AUTH_ADMIN_PASSWORD']}"
    request = urllib.request.Request(
        f"{server}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": "Basic " + base64.b64encode(login.encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 401:
            return False
        raise


def _print_links(server: str, store: str) -> None:
    experiments = client(store).search_experiments()
    print(f"MLflow UI: {server}")
    for exp in experiments:
        print(f"  {exp.name}: {runs_link(server, exp.experiment_id)}")
        if f"mlflow.sharedViewState.{PAIRS_VIEW}" in exp.tags:
            print(f"  {exp.name} by encoder pair: {runs_link(server, exp.experiment_id, grouped=True)}")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    store = tracking_uri(args.tracking_uri)
    ensure_reachable(store)
    if store.startswith("http"):
        _print_links(store.rstrip("/"), store)
        return 0
    _check_exposure(args)
    if args.stop_with_ray and not _ray_node_running():
        raise InputError("--stop-with-ray: no Ray node of this user runs on this machine (start it first: `ray start`)")
    server = f"http://{args.host}:{args.port}"
    artifacts = args.artifacts_destination or str(Path(store.removeprefix("sqlite:///")).parent / "mlartifacts")
    fs.check_reachable(artifacts)
    auth = _auth_settings(store) if args.auth else {}  # before the server starts: a missing login is exit 2
    if args.background:  # the same command in the foreground of a new session; ready when it answers
        command = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "ui",
            "--tracking-uri",
            store,
            "--artifacts-destination",
            artifacts,
            "--host",
            args.host,
            "--port",
            str(args.port),
            *(["--stop-with-ray"] if args.stop_with_ray else []),
            *(["--auth"] if args.auth else []),
            *(["--no-auth"] if args.no_auth else []),
            *(["--allowed-hosts", args.allowed_hosts] if args.allowed_hosts else []),
        ]
        serving = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_healthy(server, serving)
        if auth and not _login_accepted(server, auth):
            serving.terminate()
            raise InputError(WRONG_LOGIN)
        print(f"MLflow server at {server} (pid {serving.pid}) serving {store} in the background")
        return 0
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        artifacts,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
        "--allowed-hosts",
        _allowed_hosts(args.host, args.allowed_hosts),
        *(["--app-name", "basic-auth"] if args.auth else []),
    ]
    # MLflow's background job runner (5-7 processes) serves features this project does not use and
    # slows the server's start-up several-fold on a small machine
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **auth}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `finally` stops the server
    try:
        _wait_healthy(server, process)
        if auth and not _login_accepted(server, auth):
            raise InputError(WRONG_LOGIN)  # `finally` stops the server
        _print_links(server, store)
        print("serving; Ctrl-C to stop" + ("; stops with this machine's Ray node" if args.stop_with_ray else ""))
        sys.stdout.flush()
        while process.poll() is None and (not args.stop_with_ray or _ray_node_running()):
            time.sleep(RAY_POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0
