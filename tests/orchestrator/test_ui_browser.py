"""Headless chromium renders the MLflow UI that `sotalign ui` serves, and shows the project's tags.

test_tracking_ui.py checks the REST API, which answers even when the React app is blank. Here a
sweep is stored as the benchmarks log one (a parent run and child runs tagged mlflow.parentRunId,
encoder_pair, method, teacher, with mean_recall_at_1), and chromium renders two pages after their
scripts ran (--dump-dom):
- a child run's page, #/experiments/<id>/runs/<run_id>, whose Tags box lists encoder_pair;
- the runs table grouped by encoder_pair, the link `sotalign ui` prints for the shared view the
  project stores on every experiment it creates (the default table shows only the collapsed parent
  run and no tag column);
- the run's retrieval gallery, listed under its artifacts as every run logs it (plots/gallery.png,
  drawn by the project's own gallery code) and shown: its orange frames are in the screenshot.
Skipped only when no chromium binary is on PATH (`make system` installs Debian's as root).
"""

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAIRS = {
    "lite0-minilm": ("packaged:efficientnet-lite0 + packaged:all-minilm-l6-v2", 31.5),
    "lite2-minilm": ("packaged:efficientnet-lite2 + packaged:all-minilm-l6-v2", 42.25),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_sweep(db, folder):
    from mlflow import MlflowClient
    from PIL import Image

    from orchestrator.gallery import draw_gallery
    from orchestrator.tracking import experiment_id
    from sotalign.experiments.retrieval_cases import Hit, QueryResult

    client = MlflowClient(db)
    exp = experiment_id(db, "openmoji")  # as the project creates it: with the encoder-pair view
    parent = client.create_run(exp, run_name="sweep-openmoji").info.run_id
    children = {}
    for name, (pair, score) in PAIRS.items():
        tags = {"mlflow.parentRunId": parent, "encoder_pair": pair, "method": "sotalign", "teacher": "linear"}
        children[name] = client.create_run(exp, run_name=name, tags=tags).info.run_id
        client.log_metric(children[name], "mean_recall_at_1", score)
    colours = ["red", "green", "blue", "gold", "purple", "black"]
    misses = [QueryResult(q, [Hit(r, 0.5, False) for r in range(5) if r != q], q, 7) for q in range(4)]
    gallery = draw_gallery(
        misses,
        misses,
        lambda row: Image.new("RGB", (32, 32), colours[row]),
        lambda row: f"a {colours[row]} square",
        "planted",
        folder / "plots" / "gallery.png",
    )
    client.log_artifact(children["lite0-minilm"], str(gallery), "plots")
    for name in children:
        client.set_terminated(children[name])
    client.set_terminated(parent)
    return exp, children


def render(url, screenshot, expected):
    """Visible text of the page once chromium ran its scripts; two retries with more virtual time if a string is missing."""
    for attempt in range(3):
        command = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={screenshot.with_suffix('.profile')}",
            "--window-size=1600,900",
            f"--virtual-time-budget={15000 * (attempt + 1)}",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ]
        dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
        text = " ".join(
            html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S))).split()
        )
        missing = [s for s in expected if s not in text]
        if not missing:
            break
    assert not missing, f"{url} did not render {missing}; page text: {text[:3000]}"
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000, (
        f"{screenshot}: not a rendered PNG ({len(png)} bytes)"
    )
    print(f"screenshot: {screenshot}")


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (`make system` installs Debian's chromium as root)"
)
def test_ui_renders_the_sweep_with_its_encoder_pairs(tmp_path):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp, children = store_sweep(db, tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--tracking-uri", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    watchdog = threading.Timer(
        300, proc.terminate
    )  # its mlflow server can take minutes to start on a loaded 2-core machine
    watchdog.start()
    try:
        lines = [proc.stdout.readline()]
        while lines[-1] and "serving" not in lines[-1]:  # "" once the command exited
            lines.append(proc.stdout.readline())
        runs_link = f"http://127.0.0.1:{port}/#/experiments/{exp}/runs"
        assert f"  openmoji: {runs_link}\n" in lines and "serving" in lines[-1], f"`sotalign ui` printed {lines}"

        pairs, scores = [pair for pair, _ in PAIRS.values()], [str(score) for _, score in PAIRS.values()]
        render(
            f"{runs_link}/{children['lite0-minilm']}",
            tmp_path / "run.png",
            [
                "lite0-minilm",
                "Parent run sweep-openmoji",
                "Tags",
                "encoder_pair",
                pairs[0],
                "teacher",
                "linear",
                scores[0],
            ],
        )
        artifact = f"{runs_link}/{children['lite0-minilm']}/artifacts/plots/gallery.png"
        render(artifact, tmp_path / "gallery.png", ["Artifacts", "plots", "plots/gallery.png"])
        from PIL import Image

        from orchestrator.gallery import ORANGE

        shown = Image.open(tmp_path / "gallery.png").convert("RGB").getdata()
        assert sum(pixel == ORANGE for pixel in shown) > 200  # the gallery's frames, drawn in the page
        grouped = next(line.split(": ", 1)[1].strip() for line in lines if "openmoji by encoder pair:" in line)
        render(
            grouped,
            tmp_path / "runs.png",
            ["Group by: encoder_pair", *(f"Group: {pair}" for pair in pairs), *PAIRS, *scores],
        )
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
