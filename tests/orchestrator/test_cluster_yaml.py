"""cluster.yaml (AWS) and cluster.local.yaml (your own machines over SSH) validate against Ray's
own schema and cross-field checks (what `ray up` runs), and the two cannot drift apart: the same
project copy, set-up and start commands, but for the resources the local provider takes on its
`ray start` lines."""

import copy
import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())


def load(name: str = "cluster.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_cluster_yaml_is_valid_for_ray_up():
    config = load()
    errors = [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(config)]
    assert errors == []
    validate_config(prepare_config(copy.deepcopy(config)))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("TRAIN_DRIVER_RESOURCE", 0) >= 1 and "GPU" not in head["resources"]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in config["available_node_types"].values())
    commands = " ".join(config["setup_commands"] + config["head_start_ray_commands"])
    assert "uv sync --frozen" in commands and "sotalign ui" in commands and "--stop-with-ray" in commands


def test_the_validation_catches_typos():
    config = load()
    config["setup_comands"] = config.pop("setup_commands")
    config["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(config))
    assert len(errors) == 2
    broken = load()
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(copy.deepcopy(broken)))


def test_cluster_local_yaml_is_valid_for_ray_up():
    config = load("cluster.local.yaml")
    assert [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(config)] == []
    prepared = prepare_config(copy.deepcopy(config))  # the local provider's own preparation (no node types allowed)
    validate_config(prepared)
    assert config["provider"]["type"] == "local" and "available_node_types" not in config
    assert all(isinstance(c, str) for key in COMMANDS for c in config[key])  # a stray `: ` makes a YAML mapping
    head = " ".join(config["head_start_ray_commands"])
    resources = json.loads(re.search(r"--resources='([^']*)'", head).group(1))
    assert resources.get("TRAIN_DRIVER_RESOURCE", 0) >= 1


COMMANDS = ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def without_resources(command: str) -> str:
    """A `ray start` line without the resources that AWS node types declare and local nodes state."""
    return re.sub(r" --(resources='[^']*'|num-gpus=\S+|num-cpus=\S+)", "", command)


def test_the_two_cluster_files_cannot_drift():
    aws, local = load("cluster.yaml"), load("cluster.local.yaml")
    assert aws["file_mounts"] == local["file_mounts"] and aws["rsync_exclude"] == local["rsync_exclude"]
    for key in COMMANDS:
        assert [without_resources(c) for c in aws[key]] == [without_resources(c) for c in local[key]], key


def test_the_project_copy_has_what_uv_sync_and_the_cli_need_and_no_venv():
    mounts = load("cluster.yaml")["file_mounts"]
    remote = {r.removeprefix("~/sotalign/") for r in mounts}
    build = {
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "LICENSE",
        ".python-version",
    }  # uv sync --frozen + hatchling's readme and licence
    packages = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
            "only-include"
        ]
    )  # sotalign, orchestrator and search_spaces
    assert build | packages <= remote
    for local in mounts.values():  # `ray up` hashes each mount whole: never a folder that holds a venv
        source = (ROOT / local).resolve()
        assert source != ROOT and not (source.is_dir() and any(p.name == ".venv" for p in source.rglob(".venv"))), local
