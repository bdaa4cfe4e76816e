"""A cluster's two secrets: the Ray token and the MLflow login, each in the file its library reads.

* ``~/.ray/auth_token``: Ray 2.60 reads it in every process started with ``RAY_AUTH_MODE=token``
  (after ``RAY_AUTH_TOKEN`` and ``RAY_AUTH_TOKEN_PATH``), to send and to check (docs/notes/stack.md).
* ``~/.mlflow/credentials``: every MLflow client reads it (after ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD``), and ``sotalign ui --auth`` makes its admin from the same login.

``sotalign cluster-secrets`` makes both where they are missing or unusable (the cluster files' head runs it before
``ray start``; ``cluster_synced_files`` copies them to each worker before its own ``ray start``). They
are random, readable by their owner only, and never printed.
"""

from __future__ import annotations

import argparse
import configparser
import os
import secrets
from pathlib import Path

from sotalign.checks import InputError

MLFLOW_USER = "sotalign"  # the login the cluster's runs log as (and the server's admin)
MIN_PASSWORD_CHARS = 12  # MLflow 3.17's basic-auth app refuses a shorter admin password


def default_ray_token_file() -> Path:
    return Path.home() / ".ray" / "auth_token"


def ray_token_file() -> Path:
    """Where this process's Ray reads its token from a file: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or default_ray_token_file())


def mlflow_credentials_file() -> Path:
    return Path.home() / ".mlflow" / "credentials"


def _first_line(path: Path) -> str:
    try:
        return (path.read_text().strip().splitlines() or [""])[0]
    except OSError:
        return ""


def ray_tokens() -> list[str]:
    """Every Ray token this process can see: the environment's, its token file's and ``~/.ray/auth_token``'s."""
    files = {ray_token_file(), default_ray_token_file()}
    return [t for t in [os.environ.get("RAY_AUTH_TOKEN", "").strip(), *map(_first_line, files)] if t]


def _stored_login(path: Path) -> tuple[str, str]:
    """(username, password) of an MLflow credentials file, empty where it has none. Read here rather than
    with mlflow's own reader: the redaction of every log line needs it, and must not import mlflow."""
    stored = configparser.ConfigParser()
    try:
        stored.read(path)
    except configparser.Error:
        return "", ""
    return tuple(stored.get("mlflow", f"mlflow_tracking_{key}", fallback="") for key in ("username", "password"))


def mlflow_passwords() -> list[str]:
    """Every MLflow password this process can see: the environment's and ``~/.mlflow/credentials``'s."""
    found = [os.environ.get("MLFLOW_TRACKING_PASSWORD", ""), _stored_login(mlflow_credentials_file())[1]]
    return [p for p in found if p]


def mlflow_login() -> tuple[str | None, str | None]:
    """(username, password) as MLflow's clients find them: the environment first, then ~/.mlflow/credentials."""
    stored_user, stored_password = _stored_login(mlflow_credentials_file())
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or stored_user or None
    return user, os.environ.get("MLFLOW_TRACKING_PASSWORD") or stored_password or None


def server_login() -> tuple[str, str]:
    """The login an authenticating MLflow server makes its admin (InputError where there is none, or it is short)."""
    user, password = mlflow_login()
    if not user or not password:
        raise InputError(
            "--auth needs an MLflow login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or run "
            f"`sotalign cluster-secrets` to write {mlflow_credentials_file()}"
        )
    if len(password) < MIN_PASSWORD_CHARS:
        raise InputError(f"the MLflow password must have at least {MIN_PASSWORD_CHARS} characters (MLflow's rule)")
    return user, password


def write_private(path: Path, text: str) -> None:
    """``text`` into a new file only its owner can read (its folder too), written whole or not at all."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(partial, path)


def ensure_cluster_secrets() -> list[Path]:
    """Make the Ray token and the MLflow login files where they are missing or unusable (empty, no login);
    a file kept is made private (a token left by a local ``ray.init()`` is world-readable). Returns the
    files made."""
    made = []
    token = default_ray_token_file()
    if not _first_line(token):
        write_private(token, secrets.token_hex(32))  # what `ray get-auth-token --generate` makes: 256 bits
        made.append(token)
    login = mlflow_credentials_file()
    if len(_stored_login(login)[1]) < MIN_PASSWORD_CHARS:  # missing, empty or no login in it
        password = secrets.token_urlsafe(24)
        write_private(
            login, f"[mlflow]\nmlflow_tracking_username = {MLFLOW_USER}\nmlflow_tracking_password = {password}\n"
        )
        made.append(login)
    for path in (token, login):
        path.chmod(0o600)
    return made


def add_parser(commands) -> None:
    p = commands.add_parser(
        "cluster-secrets",
        help="make this cluster's Ray token and MLflow login where missing (~/.ray/auth_token, ~/.mlflow/credentials)",
        description="Writes a random Ray token to ~/.ray/auth_token and a random MLflow login to "
        "~/.mlflow/credentials where the file is missing or holds none, and makes both readable by their owner "
        "only. Prints the files, never their contents. The cluster files' head runs it before `ray start`.",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    made = ensure_cluster_secrets()
    for path in (default_ray_token_file(), mlflow_credentials_file()):
        print(f"{'made' if path in made else 'kept'} {path}")
    return 0
