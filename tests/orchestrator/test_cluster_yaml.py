"""cluster.yaml validates against Ray's own schema and cross-field checks (what `ray up` runs)."""

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_for_ray_up():
    config = load()
    errors = [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(config)]
    assert errors == []
    validate_config(prepare_config(copy.deepcopy(config)))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("TRAIN_DRIVER_RESOURCE", 0) >= 1 and "GPU" not in head["resources"]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in config["available_node_types"].values())
    commands = " ".join(config["setup_commands"] + config["head_start_ray_commands"])
    assert "uv sync --frozen" in commands and "mlflow server" in commands


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
