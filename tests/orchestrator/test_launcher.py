"""The README's cluster path, run for real: `ray up` / `ray exec` / `ray submit` / `ray down` of
cluster.local.yaml over SSH to 127.0.0.1.

A real ``sshd`` listens on loopback only; the cluster runs as a dedicated non-root user (its
``ray stop`` cannot reach the suite's own Ray cluster, which runs as root), with its own Ray
ports and temp dir. The cluster file is used as shipped except for the head IP, the user, its key
and the ports (``launcher_copy``). The user's machine is provisioned as a lab's image would be: the
project's locked environment is already in ``~/sotalign/.venv`` (built here from the suite's uv
cache, as root), so the file's ``uv sync --frozen`` checks it and installs nothing.
Needs root, ``sshd`` and ``rsync`` (``make system`` installs Debian's as root); skipped otherwise.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
USER = "sotalign-launch"
USER_RAY_TMPDIR = f"/tmp/ray-{USER}"  # short: Ray's socket paths must fit in 107 bytes; removed at the end
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if Path(p).exists()), None)
UV = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
SYSTEM_PYTHON = "/usr/bin/python3"  # what the user's login shell finds: the cluster file's `python3 -m pip`
PORTS = {"6379": "26379", "5000": "25000"}  # the cluster file's Ray and MLflow ports -> the test's own
EXTRA_PORTS = (
    "--dashboard-port=28265 --ray-client-server-port=20001 --dashboard-agent-listen-port=25236"  # not Ray's defaults
)
RAY = str(Path(sys.executable).parent / "ray")
LONG_S = 900  # a generous bound for one launcher command on a busy 2-core machine; none should come near it


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: it creates the SSH user and starts sshd"
    missing = [
        name
        for name, path in (
            ("sshd", SSHD),
            ("rsync", shutil.which("rsync")),
            ("useradd", shutil.which("useradd")),
            ("uv", UV),
            (SYSTEM_PYTHON, shutil.which(SYSTEM_PYTHON)),
        )
        if not path
    ]
    if missing:
        return f"missing {', '.join(missing)} (`make system` installs openssh-server and rsync as root)"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 22)) == 0:
            return "port 22 on 127.0.0.1 is taken by another SSH server (Ray's SSH runner passes no port)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def run(command: list[str], user: str | None = None, timeout: float = LONG_S, check: bool = True, **kwargs) -> str:
    """Run a command (as ``user`` through su when given); output with CRLF turned into LF."""
    if user:
        command = ["su", "-", user, "-s", "/bin/bash", "-c", " ".join(command)]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kwargs
    )
    out = done.stdout.replace("\r\n", "\n")
    if check:
        assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{out[-6000:]}"
    return out


def user_processes() -> list[psutil.Process]:
    uid = pwd.getpwnam(USER).pw_uid
    return [
        p for p in psutil.process_iter(["uids", "name", "cmdline"]) if p.info["uids"] and p.info["uids"].real == uid
    ]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ssh_user(tmp_path_factory):
    """The SSH user with a key-only login, its Ray temp dir, and the project's environment."""
    folder = tmp_path_factory.mktemp("launcher")
    if subprocess.run(["id", USER], capture_output=True).returncode == 0:  # left by a run that was killed
        run(["userdel", "--remove", USER], check=False)
    run(["useradd", "--create-home", "--shell", "/bin/bash", USER])
    run(["usermod", "--password", "*", USER])  # no password, but not locked: sshd refuses a locked ("!") account
    home = Path(pwd.getpwnam(USER).pw_dir)
    for state in ("mlflow", "ray_results"):  # what an earlier run's cluster left: a new cluster starts empty
        shutil.rmtree(home / state, ignore_errors=True)
    (home / "compare.png").unlink(missing_ok=True)
    key = folder / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    bashrc = home / ".bashrc"
    line = f"export RAY_TMPDIR={USER_RAY_TMPDIR}  # this user's Ray temp dir, apart from root's /tmp/ray\n"
    bashrc.write_text(bashrc.read_text() + line)
    provision_environment(home)
    run(["chown", "-R", f"{USER}:{USER}", str(ssh), str(bashrc)])
    yield {"home": home, "key": key, "folder": folder}
    wait_until(lambda: not user_processes(), 60, f"every process of {USER} to end")
    run(["userdel", "--remove", USER])  # the user, its home and the environment built there: nothing stays
    shutil.rmtree(USER_RAY_TMPDIR, ignore_errors=True)


def provision_environment(home: Path) -> None:
    """``~/sotalign`` as ``ray up`` copies it (same files, same times) with the locked environment
    installed by root from the suite's uv cache; the user owns the files and the venv folder."""
    project = home / "sotalign"
    mounts = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())["file_mounts"]
    for remote, local in mounts.items():
        target = project / remote.removeprefix("~/sotalign/")
        source = ROOT / local
        target.parent.mkdir(parents=True, exist_ok=True)
        run(["rsync", "-a", "--exclude", "__pycache__", f"{source}/" if source.is_dir() else str(source), str(target)])
    run(["chown", "-R", f"{USER}:{USER}", str(project)])  # before the venv: its files stay the cache's
    run(
        [UV, "sync", "--frozen", "--no-dev", "--python", SYSTEM_PYTHON],
        cwd=project,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": ""},
    )
    run(["chown", f"{USER}:{USER}", str(project / ".venv")])  # the user's uv takes its lock file there


@pytest.fixture(scope="module")
def sshd(ssh_user):
    """A real sshd on 127.0.0.1:22 only, key login for the test user only, with its own host key and
    privilege-separation folder: the machine's /etc/ssh stays as it was."""
    privsep = Path("/run/sshd")  # compiled into Debian's sshd; made here when missing, removed after
    made_privsep = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    host_key = ssh_user["folder"] / "ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    config = ssh_user["folder"] / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                "Port 22",
                f"HostKey {host_key}",
                f"AllowUsers {USER}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                f"PidFile {ssh_user['folder'] / 'sshd.pid'}",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", 22)) == 0

    wait_until(lambda: listening() or process.poll() is not None, 30, "sshd to listen")
    assert process.poll() is None, "sshd exited at start"
    yield process
    process.terminate()
    process.wait(timeout=30)
    if made_privsep:
        privsep.rmdir()


def launcher_copy(key: Path, folder: Path) -> Path:
    """cluster.local.yaml as shipped but for head IP, user, key and ports."""
    config = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": USER, "ssh_private_key": str(key)}

    def ported(command: str) -> str:
        for old, new in PORTS.items():
            command = command.replace(old, new)
        return command.replace("ray start --head", f"ray start --head {EXTRA_PORTS}")

    for section in ("head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        config[section] = [ported(c) for c in config[section]]
    path = folder / "cluster.local.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def driver(python: Path, address: str, **auth: str) -> subprocess.CompletedProcess:
    """A driver of this machine's root (another user than the cluster's) on the cluster's Python (Ray refuses
    another version), in an empty home: ``auth`` only."""
    home = tempfile.mkdtemp(prefix="driver-home-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": home} | auth
    # the GCS's node table: what a refused driver never reads (its tasks would run as the cluster's user, who
    # cannot read root's session files, so none is sent)
    script = f"import ray; ray.init(address={address!r}); print('nodes', sum(n['Alive'] for n in ray.nodes()))"
    try:
        return subprocess.run(
            [str(python), "-c", script],
            env={**env, "RAY_gcs_server_port_wait_time_s": "2"},  # a refusal after 2 tries, not Ray's 20
            cwd=home,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_ray_up_submit_down_on_the_local_provider(ssh_user, sshd, monkeypatch):
    from mlflow.tracking import MlflowClient

    folder = ssh_user["folder"]
    cluster = str(launcher_copy(ssh_user["key"], folder))
    launcher = {
        **os.environ,
        "RAY_TMPDIR": str(folder / "launcher"),  # the launcher's cluster state, apart from the suite's
        "AUTOSCALER_NODE_START_WAIT_S": "300",
    }  # how long `ray up` retries SSH (Ray's default: 900 s)
    ray = lambda *args, **kw: run([RAY, *args], cwd=ROOT, env=launcher, **kw)  # noqa: E731
    try:
        up = ray("up", "-y", "--no-config-cache", cluster)
        server = f"http://127.0.0.1:{PORTS['5000']}"
        # the cluster's secrets: made on the head, its user's alone, never printed
        token_file, login_file = ssh_user["home"] / ".ray" / "auth_token", ssh_user["home"] / ".mlflow" / "credentials"
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in (token_file, login_file))
        login = configparser.ConfigParser()
        login.read(login_file)
        user, password = (login["mlflow"][f"mlflow_tracking_{k}"] for k in ("username", "password"))
        token = token_file.read_text().strip()
        assert token not in up and password not in up
        # Ray: token authentication on; the dashboard on loopback only
        address = f"127.0.0.1:{PORTS['6379']}"
        python = ssh_user["home"] / "sotalign" / ".venv" / "bin" / "python"
        refused = driver(python, address, RAY_AUTH_MODE="disabled")
        assert refused.returncode != 0 and "InvalidAuthToken" in refused.stderr, refused.stderr[-3000:]
        accepted = driver(python, address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
        assert accepted.returncode == 0 and "nodes 1" in accepted.stdout, accepted.stderr[-3000:]
        dashboard = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == 28265]
        assert dashboard and {a.ip for a in dashboard} == {"127.0.0.1"}, dashboard
        # MLflow: the server asks for the login (its health check stays open); this test logs in as the runs do
        assert http_status(f"{server}/api/2.0/mlflow/experiments/search?max_results=1") == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow_servers = lambda: [p for p in user_processes() if "mlflow" in " ".join(p.info["cmdline"] or [])]  # noqa: E731
        assert mlflow_servers(), "the head commands started no MLflow server"
        with urllib.request.urlopen(f"{server}/health", timeout=10) as health:  # up when `ray up` returns
            assert health.status == 200

        out = ray("submit", cluster, "orchestrator/cli.py", "--", "sweep", "sotalign/search_spaces/smoke.yaml")
        assert "best val/mean_recall_at_1" in out and "results: /home/" in out, out[-4000:]
        assert token not in out and password not in out

        client = MlflowClient(server)  # the head's server, as every node sees it
        experiment = client.get_experiment_by_name("smoke")
        runs = client.search_runs([experiment.experiment_id])
        parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parent) == 1 and len(children) == 2, [r.data.tags for r in runs]
        assert all(c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for c in children)
        assert {c.data.tags["method"] for c in children} == {"sail", "sotalign"}
        assert all(
            c.info.status == "FINISHED"
            and c.data.tags["sweep"] == "smoke"
            and c.data.tags["encoder_pair"]
            and "mean_recall_at_1" in c.data.metrics
            for c in children
        )
        assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"config.yaml", "eval.json", "model"}
        assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"results.md", "best_config.yaml"}
        stored = ssh_user["home"] / "mlflow" / "artifacts"  # proxied to the head's disk by the server
        assert any(p.name == "eval.json" for p in stored.rglob("eval.json"))

        out = ray("exec", cluster, "sotalign compare --experiment smoke --group-by method --out compare.png")
        assert "sotalign" in out and "sail" in out, out[-3000:]
        out = ray("exec", cluster, "sotalign ui")  # a server URI: it prints the runs links
        assert f":{PORTS['5000']}/#/experiments/{experiment.experiment_id}/runs" in out, out[-3000:]

        ray("down", "-y", cluster)
        wait_until(
            lambda: not [p for p in user_processes() if p.info["name"] in ("raylet", "gcs_server")], 60, "Ray to stop"
        )
        wait_until(lambda: not mlflow_servers(), 60, "the MLflow server to stop with Ray")
    finally:
        run([RAY, "down", "-y", cluster], cwd=ROOT, env=launcher, check=False)
        for ssh in psutil.process_iter(["cmdline"]):  # Ray's SSH control masters (ControlPersist) to the test user
            if f"{USER}@127.0.0.1" in " ".join(ssh.info["cmdline"] or []):
                ssh.terminate()
        sshd.terminate()
        sshd.wait(timeout=30)
