"""Reading a store's tables from object storage vs from a local disk: rows/s of each and their ratio.

One table of ``--rows`` random ``--dim``-dim float32 embeddings in shards of ``SHARD_SIZE`` rows (what
``sotalign embed`` writes) is stored twice, in a local folder and in a bucket of a moto S3 server started
here on loopback, then read whole with ``read_table`` (what training and sweeps do), min over repeats.
moto is a Python server: the ratio bounds the layer's per-request overhead on this machine, not a real
object store's bandwidth.

Usage: ``uv run --frozen python -m benchmarks.store_read [--rows 32768] [--dim 512] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from benchmarks.harness import table
from sotalign.data import fs
from sotalign.data.extract import SHARD_SIZE, read_table, shard_path, shard_ranges, write_manifest
from sotalign.data.store import write_embeddings

BUCKET = "bench"
AWS_ENVIRONMENT = {  # moto accepts any credentials; AWS_ENDPOINT_URL is set to the server started here
    "AWS_ENDPOINT_URL": None,
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto(timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """A moto S3 server (its own process) on a free loopback port, once it answers: (process, endpoint).
    The tests' S3 fixture starts it this way too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return server, endpoint
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not answer at {endpoint}") from None
            time.sleep(0.2)


def write_table(folder: str, embeddings: torch.Tensor) -> None:
    """The table as ``embed_rows`` lays it out: shards, then the manifest."""
    ids = [f"bench/{i}" for i in range(len(embeddings))]
    ranges = shard_ranges(len(ids))
    for index, (start, stop) in enumerate(ranges):
        write_embeddings(shard_path(folder, index), ids[start:stop], embeddings[start:stop], {"encoder": "bench"})
    write_manifest(folder, "bench", "image", embeddings.shape[1], len(ids), len(ranges), {"dataset": "bench"})


def seconds_to_read(folder: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_table(folder)
        times.append(time.perf_counter() - start)
    return min(times)


def run(n_rows: int, dim: int, repeats: int) -> tuple[str, list[dict]]:
    """The Markdown section and the records of one measurement (a moto server started and stopped here)."""
    import boto3

    embeddings = torch.randn(n_rows, dim, generator=torch.Generator().manual_seed(0))
    server, endpoint = start_moto()
    saved = {key: os.environ.get(key) for key in AWS_ENVIRONMENT}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, **{k: v for k, v in AWS_ENVIRONMENT.items() if v})
    fs._remote.cache_clear()
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory() as local:
            folders = {"local disk": fs.join(local, "table"), "S3 (moto, loopback)": f"s3://{BUCKET}/table"}
            for folder in folders.values():
                write_table(folder, embeddings)
            seconds = {where: seconds_to_read(folder, repeats) for where, folder in folders.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():  # the caller's AWS environment back as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fs._remote.cache_clear()
    local_s, remote_s = seconds.values()
    rows = [[where, f"{s:.3f}", f"{n_rows / s:,.0f}"] for where, s in seconds.items()]
    shards = len(shard_ranges(n_rows))
    text = (
        f"## Store read: {n_rows} rows x {dim} float32 in {shards} shards of {SHARD_SIZE}\n\n"
        + table(["where", "seconds", "rows/s"], rows)
        + f"\n\nS3 / local time: {remote_s / local_s:.1f}x"
    )
    records = [{"suite": "store", "where": where, "rows": n_rows, "seconds": s} for where, s in seconds.items()]
    return text, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32768)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.rows, args.dim, args.repeats)[0])


if __name__ == "__main__":
    main()
