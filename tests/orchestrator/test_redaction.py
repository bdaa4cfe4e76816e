"""What ``orchestrator.redaction`` hides: a URI's user info, the environment's and the secret files'
credentials, credential-named config keys; and the CLI's ``error:`` line and log lines pass through it."""

from __future__ import annotations

import logging

import pytest

from orchestrator import logs
from orchestrator.cli import main
from orchestrator.redaction import HIDDEN, known_secrets, redact, redact_tree


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home and an environment without credentials."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in list(__import__("os").environ):
        if any(word in name.upper() for word in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL")):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize(
    "text, shown",
    [
        ("s3://AKID:s3cr3t/x@bucket/store", "s3://***@bucket/store"),
        ("cannot reach http://user:pa55word@head:5000/api", "cannot reach http://***@head:5000/api"),
        ("'s3://KEY:SECRET@b/p' and gs://tok@b2/q", "'s3://***@b/p' and gs://***@b2/q"),
        ("s3://bucket/store and http://head:5000", "s3://bucket/store and http://head:5000"),  # nothing to hide
        ("user@example.org wrote it", "user@example.org wrote it"),  # not a URI
    ],
)
def test_a_uris_user_info_is_hidden_whole(home, text, shown):
    assert redact(text) == shown


def test_the_environments_and_the_files_secrets_are_hidden_wherever_they_appear(home, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct-horse-battery")
    monkeypatch.setenv("SOTALIGN_DEBUG_TOKEN", "1")  # too short to be a secret: left alone
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("ab" * 32 + "\n")
    (home / ".mlflow").mkdir()
    (home / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = u\nmlflow_tracking_password = pw-from-the-file\n"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert set(known_secrets()) == {"wJalrXUtnFEMI/K7MDENG", "ab" * 32, "pw-from-the-file"}
    text = f"key wJalrXUtnFEMI/K7MDENG, token {'ab' * 32}, pw pw-from-the-file, step 1"
    assert redact(text) == f"key {HIDDEN}, token {HIDDEN}, pw {HIDDEN}, step 1"


def test_credential_named_keys_are_hidden_and_strings_redacted_at_any_depth(home):
    tree = {
        "data": {"store": "s3://K:S@b/store", "n_pairs": 100},
        "storage": {"aws_secret_access_key": "abcdefgh", "password": None, "endpoint": "http://minio:9000"},
        "list": [{"api_key": 12345678}, "http://u:p@h"],
    }
    assert redact_tree(tree) == {
        "data": {"store": "s3://***@b/store", "n_pairs": 100},
        "storage": {"aws_secret_access_key": HIDDEN, "password": None, "endpoint": "http://minio:9000"},
        "list": [{"api_key": HIDDEN}, "http://***@h"],
    }


def test_the_error_line_and_log_lines_hold_no_secret(home, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value")
    assert main(["train", "no-such-file-planted-secret-value.yaml"]) == 2
    err = capsys.readouterr().err
    assert "planted-secret-value" not in err and f"no-such-file-{HIDDEN}.yaml" in err
    # a --set value under a credential's name is hidden even where it is not a known secret
    assert main(["train", "x.yaml", "--set", "data.secret_key=[set-secret-value"]) == 2
    err = capsys.readouterr().err
    assert "set-secret-value" not in err and f"cannot parse value '{HIDDEN}'" in err
    logs.configure(logs.DEFAULT)
    logging.getLogger("orchestrator.test").info("reading s3://AK:%s@bucket/store", "planted-secret-value")
    assert capsys.readouterr().err.strip() == "reading s3://***@bucket/store"
