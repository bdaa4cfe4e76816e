"""Secrets kept out of everything the project writes or prints.

A secret reaches the project three ways: the environment (``AWS_SECRET_ACCESS_KEY``,
``MLFLOW_TRACKING_PASSWORD``, ``RAY_AUTH_TOKEN``, ...), the files that Ray and MLflow read
(``~/.ray/auth_token``, ``~/.mlflow/credentials``), and a URI that carries its own credentials
(``s3://KEY:SECRET@bucket/store``, ``http://user:password@head:5000``). Nothing here logs the
environment, but configs, URIs and error messages do travel into MLflow params and tags,
``config.yaml`` artifacts, sweep result files, log lines and the CLI's ``error:`` line: each passes
through ``redact`` (a string) or ``redact_tree`` (a config) on its way out. A URI's user info
is replaced whole; a known secret's value is replaced wherever it appears; a config key that names a
credential (``secret_key``, ``password``, ``token``) has its value hidden.
"""

from __future__ import annotations

import logging
import os
import re

from orchestrator.credentials import mlflow_passwords, ray_tokens

HIDDEN = "***"
# names of environment variables and config keys that hold a credential
# (not an access key's id: AWS_ACCESS_KEY_ID names an account, and hiding it garbled ordinary values)
SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|private_key|api_key|session_key", re.I)
# the user info of a URI (scheme://user:password@host): all of it, since a key id names an account; the
# password may hold a "/" or an "@" (AWS secret keys hold "/", and users rarely percent-encode), so it runs
# to the last "@" before the host; "host:5000/path@x" is a port and a path, not a login
_USER_INFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s'\":]+(?::(?!\d+(?:[/\s'\"]|$))[^\s'\"]*)?)"
    r"@(?=[^@\s/'\"]*(?:[/\s'\"]|$))"
)
_WHERE = ("_PATH", "_FILE", "_DIR")  # RAY_AUTH_TOKEN_PATH names where a secret is, not the secret
MIN_SECRET_CHARS = 8  # shorter values ("1", "false") are settings, and replacing them would garble text


_remembered: set[str] = set()  # secrets this process was given otherwise (``remember_secret``)


def remember_secret(value: str) -> None:
    """Hide ``value`` too from now on in this process (a ``--set`` value given under a credential's name)."""
    _remembered.add(value)


def known_secrets() -> list[str]:
    """The values of the environment's credential variables, of this user's Ray and MLflow secret files and
    of ``remember_secret``, longest first (so that a secret containing another is hidden whole)."""
    values = [value for name, value in os.environ.items() if SECRET_NAME.search(name) and not name.endswith(_WHERE)]
    values += [*_remembered, *ray_tokens(), *mlflow_passwords()]
    return sorted({v.strip() for v in values if len(v.strip()) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every URI's user info and every known secret replaced by ``***``."""
    text = _USER_INFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)
    for secret in known_secrets() if secrets is None else secrets:
        text = text.replace(secret, HIDDEN)
    return text


def redact_tree(tree, secrets: list[str] | None = None):
    """A copy of a config (dicts, lists, scalars) with credential-named keys hidden and strings redacted."""
    secrets = known_secrets() if secrets is None else secrets
    if isinstance(tree, dict):
        return {
            key: HIDDEN if SECRET_NAME.search(str(key)) and value is not None else redact_tree(value, secrets)
            for key, value in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        return type(tree)(redact_tree(value, secrets) for value in tree)
    if isinstance(tree, str):
        return redact(tree, secrets)
    return tree


class RedactingFilter(logging.Filter):
    """A log handler's filter that redacts each record's message before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
