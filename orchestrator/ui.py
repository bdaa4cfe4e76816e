"""``sotalign ui``: the MLflow UI for the project's tracking store.

For a sqlite store it starts ``mlflow server`` on loopback and waits for it; for a server URI it
only prints links. The links go straight to the runs table (``#/experiments/<id>/runs``): MLflow
3.17 opens in GenAI mode otherwise (docs/stack.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

from orchestrator.tracking import PAIRS_VIEW, ensure_reachable, runs_link, tracking_uri


def add_parser(commands) -> None:
    p = commands.add_parser("ui", help="start the MLflow UI on the project's tracking store and print the runs links")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default loopback)")
    p.set_defaults(run=run)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ValueError(f"mlflow server exited with code {process.returncode} (port in use?)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise ValueError(f"mlflow server did not answer {url}/health within {timeout:.0f} s")


def _print_links(server: str, store: str) -> None:
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(store).search_experiments()
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
    server = f"http://{args.host}:{args.port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    # MLflow's background job runner (5-7 processes) serves features this project does not use and
    # slows the server's start-up several-fold on a small machine
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `finally` stops the server
    try:
        _wait_healthy(server, process)
        _print_links(server, store)
        print("serving; Ctrl-C to stop")
        sys.stdout.flush()
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0
