"""The wheel, installed outside the checkout, is the whole command: ``uv build --wheel``, a fresh virtual
environment with the locked versions of the dependencies (uv's cache: nothing new is downloaded), then
from an empty folder with a clean environment (no PYTHONPATH, no project venv on PATH): ``--version``
both ways, the synthetic demo, and the shipped ``smoke`` sweep named without a path, on a Ray cluster
of its own.

Ray: ``sotalign sweep`` joins a cluster that runs on this machine (``address="auto"`` finds any raylet
by its process) — here that may be the test session's own (tests/orchestrator/conftest.py) or another
user's, whose workers would run the checkout's venv, not the installed one. ``RAY_ADDRESS=local``
makes it start a local cluster of its own (orchestrator/cluster.py), with its files and sockets under a
temporary ``RAY_TMPDIR``; that cluster ends with the command (Ray ties a driver's local cluster to
it), and the processes still naming that folder afterwards are ended by their ids. Never ``ray stop``:
it stops every Ray process of the user on the machine, the session's cluster included.
"""

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# Bytecode: the installed command's processes (Ray's workers included) must not each compile torch, ray and
# mlflow from source (~30 s of CPU each, docs/notes/stack.md). A user's Python writes the .pyc files of what it
# imports on first use; this machine's PYTHONDONTWRITEBYTECODE (kept out of the clean environment) would
# stop that. Measured on 2 shared cores, the whole test: 60-80 s so; 117 s with UV_COMPILE_BYTECODE=1 (pip's
# default; compiling all 24,500 files of the environment at install takes 65 s); 90 s with neither (the sweep
# alone 64 s instead of 33).
INSTALL_ENV = {"UV_COMPILE_BYTECODE": "0", "UV_PYTHON_DOWNLOADS": "never"}
RUN_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def uv_command() -> list[str] | None:
    """uv on PATH, else the one pip installs (``python -m uv``); None without either."""
    if found := shutil.which("uv"):
        return [found]
    return [sys.executable, "-m", "uv"] if importlib.util.find_spec("uv") else None


def clean_env(**extra: str) -> dict[str, str]:
    """A user's shell environment: the system PATH without the checkout's venv, no PYTHONPATH, no
    VIRTUAL_ENV, no uv run, no MLflow or Ray settings of the session."""
    path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and not Path(p).is_relative_to(ROOT)]
    kept = {k: os.environ[k] for k in ("HOME", "USER", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return {**kept, "PATH": os.pathsep.join(path), **RUN_ENV, **extra}


def run(command: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    started = time.monotonic()
    proc = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"[{time.monotonic() - started:5.1f} s] {shlex.join(map(str, command))}")
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def end_processes_naming(folder: str, grace: float = 15.0) -> list[str]:
    """End, by their ids, the processes whose command line names ``folder`` (a Ray cluster's, by its temp
    folder) once ``grace`` seconds have not ended them; return what those ran (none: nothing was left)."""
    import psutil

    def naming():
        return [p for p in psutil.process_iter(["cmdline"]) if folder in " ".join(p.info["cmdline"] or ())]

    deadline = time.monotonic() + grace
    while (left := naming()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(left, timeout=30)
    return [" ".join(p.info["cmdline"][:2]) for p in left]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``.venv``: a fresh environment holding the built wheel and the locked dependencies; ``.work``: an
    empty folder outside the checkout."""
    uv = uv_command()
    if uv is None:
        pytest.skip("uv is neither on PATH nor importable (`python -m uv`): it builds and installs the wheel")
    tmp = tmp_path_factory.mktemp("wheel")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")},
        **INSTALL_ENV,
    }
    run([*uv, "build", "--wheel", "--out-dir", tmp / "dist"], ROOT, env)
    (wheel,) = (tmp / "dist").glob("sotalign-*.whl")
    requirements = tmp / "requirements.txt"
    run([*uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", requirements], ROOT, env)
    run([*uv, "venv", tmp / "venv", "--python", "3.11"], tmp, env)
    run([*uv, "pip", "install", "--python", tmp / "venv" / "bin" / "python", "-r", requirements, wheel], tmp, env)
    (tmp / "work").mkdir()
    return SimpleNamespace(venv=tmp / "venv", work=tmp / "work", tmp=tmp)


def test_the_installed_package_holds_its_files_and_says_its_version(installed):
    bin_ = installed.venv / "bin"
    expected = f"sotalign {version('sotalign')}"
    assert run([bin_ / "sotalign", "--version"], installed.work, clean_env()).stdout.strip() == expected
    assert run([bin_ / "python", "-m", "sotalign", "--version"], installed.work, clean_env()).stdout.strip() == expected
    code = (
        "import json, orchestrator, sotalign; from importlib.metadata import files; from orchestrator import shipped; "
        "print(json.dumps({'files': [str(f) for f in files('sotalign')], 'orchestrator': orchestrator.__file__, "
        "'sotalign': sotalign.__file__, 'shipped': str(shipped.folder())}))"
    )
    found = json.loads(run([bin_ / "python", "-c", code], installed.work, clean_env()).stdout)
    site = next((installed.venv / "lib").glob("python3.*/site-packages"))
    assert Path(found["orchestrator"]).parent == site / "orchestrator"  # the installed copy, not the checkout
    assert Path(found["sotalign"]).parent == site / "sotalign"
    assert Path(found["shipped"]) == site / "orchestrator" / "search_spaces"
    files = set(found["files"])
    assert {"sotalign/py.typed", "orchestrator/py.typed", "orchestrator/search_spaces/smoke.yaml"} <= files
    assert "orchestrator/search_spaces/experiments/openmoji.yaml" in files
    shipped = {
        f.removeprefix("orchestrator/search_spaces/") for f in files if f.startswith("orchestrator/search_spaces/")
    }
    assert shipped == {str(p.relative_to(ROOT / "search_spaces")) for p in (ROOT / "search_spaces").rglob("*.yaml")}
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    license = next(site.glob("sotalign-*.dist-info/licenses/LICENSE"))
    assert license.read_text() == (ROOT / "LICENSE").read_text()


def test_the_installed_synthetic_demo_runs_from_an_empty_folder(installed):
    out = installed.work / "demo"
    command = [installed.venv / "bin" / "sotalign", "demo", "--synthetic", "--seeds", "1", "--out", out]
    command += ["--set", "steps=20", "--set", "head_dim=16", "--set", "batch_unpaired=64"]
    proc = run(command, installed.work, clean_env())
    assert "| sotalign |" in proc.stdout and "| sail |" in proc.stdout and "| teacher |" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in results["rows"]} == {"teacher", "sail", "sotalign"}
    for row in results["rows"]:
        assert 0 <= row["mean_recall_at_1"] <= 100 and 0 <= row["t2i_recall_at_1"] <= 100


def test_the_shipped_smoke_sweep_runs_by_its_name_on_a_ray_cluster_of_its_own(installed):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{installed.tmp / 'mlflow.db'}"
    ray_tmp = tempfile.mkdtemp(prefix="rw", dir="/tmp")  # short: Ray's socket paths live under it
    env = clean_env(RAY_ADDRESS="local", RAY_TMPDIR=ray_tmp)
    try:
        proc = run(
            [installed.venv / "bin" / "sotalign", "sweep", "smoke", "--tracking-uri", uri], installed.work, env, 600
        )
    finally:
        left = end_processes_naming(ray_tmp)
        sessions = list(Path(ray_tmp, "ray").glob("session_2*"))  # the cluster it started, not one it joined
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"the sweep's Ray cluster outlived it: {left}"
    assert len(sessions) == 1, f"the sweep started no Ray cluster of its own: {proc.stderr[-3000:]}"
    rows = (installed.work / "ray_results" / "sweeps" / "smoke" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in row for row in rows[1:]), rows
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`mlflow.runName` = 'sweep-smoke'")
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["search_space"].endswith(
        "orchestrator/search_spaces/smoke.yaml"
    )
    assert sorted(c.data.tags["method"] for c in children) == ["sail", "sotalign"]
    assert all(c.info.status == "FINISHED" and 0 <= c.data.metrics["mean_recall_at_1"] <= 100 for c in children)
    # the closing hint runs as printed from where the user is: the installed script (not on this PATH)
    hint = shlex.split(proc.stdout.rsplit("browse with: ", 1)[1])
    assert hint == [str(installed.venv / "bin" / "sotalign"), "ui", "--tracking-uri", uri]
