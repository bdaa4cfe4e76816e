"""``sotalign report`` and in-process runs: real MLflow stores, real training, no Ray."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.report import _param_value, build_report, varied

EXPERIMENT = {
    "name": "tiny-report",
    "method": "sotalign",
    "seed": 0,
    "data": {"dataset": "synthetic", "n_pairs": 24, "n_unpaired": 200, "n_val": 30},
    "align": {"steps": 10, "head_dim": 8, "batch_unpaired": 64, "eval_every": 5, "log_every": 5, "alpha": 10.0},
    "run": {"workers": 0},
}


def train(tmp_path, *overrides):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT))
    return main(["train", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *overrides])


def test_in_process_runs_then_a_methods_report(tmp_path, capsys, monkeypatch):
    import ray.train.torch

    def no_ray_train(*args, **kwargs):
        raise AssertionError("workers: 0 must train in this process, without Ray Train")

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", no_ray_train)
    monkeypatch.setattr("orchestrator.train.connect_ray", no_ray_train)
    for method in ("sail", "sotalign", "nnclr"):
        for seed in (0, 1):
            assert train(tmp_path, "--set", f"method={method}", "--set", f"seed={seed}") == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny-report").experiment_id])
    assert len(runs) == 6 and all(r.info.status == "FINISHED" and "mean_recall_at_1" in r.data.metrics for r in runs)
    sotalign = next(r for r in runs if r.data.params["method"] == "sotalign")
    assert {"ssw/images", "ssw/texts", "ssw/total", "loss/klot"} <= set(
        sotalign.data.metrics
    )  # shift logged before training
    assert {a.path for a in client.list_artifacts(sotalign.info.run_id)} >= {"config.yaml", "eval.json", "model"}

    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--experiment",
                "tiny-report",
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = (out / "report.md").read_text()
    assert "paper Tables 4/5" in text and (out / "methods.png").stat().st_size > 1000
    table = [line for line in text.splitlines() if line.startswith("| sotalign |")][0]
    assert " ± " in table  # two seeds: mean ± std
    reports = client.search_runs([client.get_experiment_by_name("tiny-report").experiment_id], "tags.report = 'true'")
    assert len(reports) == 1 and [a.path for a in client.list_artifacts(reports[0].info.run_id)] == ["report"]
    assert main(["report", "--experiment", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err


def row(seed, value, **params):
    return {
        "method": "sotalign",
        "teacher": "cca",
        "divergence": "klot",
        "seed": seed,
        "mean_recall_at_1": value,
        "depends_on_unpaired": True,
        **params,
    }


def test_layouts_follow_what_the_runs_vary_and_average_repeats_within_a_seed():
    rows = [
        row(s, 10.0 + s + (t == "cca"), teacher=t, divergence=d, method="sotalign" if d != "none" else "teacher")
        for s in (0, 1)
        for t in ("procrustes", "cca")
        for d in ("none", "klot")
    ]
    rows += [dict(r) for r in rows if r["method"] == "teacher"]  # the grid repeats teacher-alone cells
    report = build_report("t1", rows)
    assert "paper Table 1" in report.sections[0][0] and "teacher_by_divergence.png" in report.figures
    grid = report.sections[0][1]
    assert "| klot | 10.5 ± 0.7 | 11.5 ± 0.7 |" in grid  # seeds 0/1 -> 10, 11 (procrustes); repeats count once
    assert "30.3" in report.sections[1][1]  # the paper's CCA + KLOT
    budget = [
        row(s, 5.0 + n / 100 + (m == "sotalign"), method=m, **{"data.n_pairs": n})
        for s in (0, 1, 2)
        for n in (100, 400)
        for m in ("sail", "sotalign")
    ]
    for r in budget:
        if r["method"] == "sail":
            r["divergence"] = "none"
    assert varied(budget) == ["method", "data.n_pairs"]  # SAIL's preset divergence is not a varied parameter
    report = build_report("fig4", budget)
    assert "n_pairs_curve.png" in report.figures and "| 400 | +1.0 |" in report.sections[1][1]
    probes = [{**r, "head_init": "random"} for r in budget]
    probes += [row(s, 9.0, head_init="teacher", **{"data.n_pairs": 400}) for s in (0, 1, 2)]
    report = build_report("probes", probes)  # a budget and a setting varied: no curve averages the two settings
    assert report.sections[0][0] == "Runs by method, head_init, data.n_pairs" and not report.figures
    alpha = [row(s, a, alpha=a, mass=m) for s in (0, 1) for a in (0.1, 10.0) for m in ("unit", "rows")]
    report = build_report("alpha", alpha)
    assert "alpha_curve.png" in report.figures and "| 10.0 | 10.0 ± 0.0 | 10.0 ± 0.0 |" in report.sections[0][1]
    eps = [row(0, 1.0, eps_student=a, eps_teacher=b) for a in (0.02, 0.05) for b in (0.01, 0.05)]
    assert "eps_teacher \\ eps_student" in build_report("eps", eps).sections[0][1]


def test_a_param_logged_as_none_equals_one_a_run_never_logged():
    assert _param_value("None") is None and _param_value("") is None
    assert (
        _param_value("0.05") == 0.05 and _param_value("digits:pool") == "digits:pool" and _param_value("true") is True
    )
    methods = [row(s, 9.0, method=m) for s in (0, 1) for m in ("sail", "sotalign")]
    methods[0]["data.unpaired_images"] = _param_value("None")  # a run of a later version logs the default
    assert varied(methods) == ["method"]


@pytest.mark.parametrize("bad", ["digits", "digits:", ":pool", "a:b:c"])
def test_unpaired_source_must_name_dataset_and_split(bad):
    from sotalign.experiments.experiment import DataSpec

    with pytest.raises(ValueError, match="DATASET:SPLIT"):
        DataSpec(unpaired_images=bad)


def test_ssw_is_zero_for_one_set_scale_free_and_grows_with_shift():
    import torch

    from sotalign.experiments.distances import spherical_sliced_wasserstein as ssw

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    assert ssw(a, a) == pytest.approx(0.0, abs=1e-9)
    assert ssw(a, 5 * b) == pytest.approx(ssw(a, b), rel=1e-6)  # embeddings are normalised first
    shifted = b + 2 * torch.nn.functional.normalize(torch.ones(16), dim=0)
    assert ssw(a, shifted) > 3 * ssw(a, b)
    with pytest.raises(ValueError, match="one space"):
        ssw(a, torch.randn(5, 8))
    json.dumps(ssw(a, b))  # a plain float, loggable


def test_a_grid_of_both_budgets_gets_one_curve_per_value_of_the_other(tmp_path):
    """iconify-fig4 varies pairs and unpaired samples at once (null = the whole pool): each budget's table
    holds the other one fixed, and SOTAlign's gain is over SAIL and over its teacher."""
    from orchestrator.report import write_report

    rows = [
        row(
            s,
            5.0 + n / 500 + 2 * (m == "sotalign") + (u or 8000) / 1000 + s,
            method=m,
            **{"data.n_pairs": n, "data.n_unpaired": u},
        )
        for s in (0, 1)
        for n in (250, 1000)
        for u in (1000, None)
        for m in ("teacher", "sail", "sotalign")
    ]
    for r in rows:
        r["divergence"] = "klot" if r["method"] == "sotalign" else "none"
        r["depends_on_unpaired"] = r["method"] != "sail"
        if r["method"] == "sotalign":  # the teacher's plan diagnostic, logged by the runs that train against it
            mass = r["data.n_pairs"] / 1000 + r["seed"]  # 0.25 + seed at 250 pairs
            r.update({"diagnostic/plan_mass_on_partners": mass, "diagnostic/plan_argmax_on_partners": 10 * mass})
            r["diagnostic/chance_mass_on_partners"] = 0.04
    rows = [r for r in rows if r["method"] != "sail" or r["data.n_unpaired"] is None]  # SAIL run once per pair budget
    report = build_report("iconify-fig4", rows)
    sections = dict(report.sections)
    by_pairs = sections["Test mean R@1 against data.n_pairs, n_unpaired = all (paper Fig. 4)"]
    assert "| 1000 | 15.5 ± 0.7 | 15.5 ± 0.7 | 17.5 ± 0.7 |" in by_pairs  # teacher, sail, sotalign at 1000 pairs
    by_pairs = sections["Test mean R@1 against data.n_pairs, n_unpaired = 1000 (paper Fig. 4)"]
    assert "| 1000 | 8.5 ± 0.7 | 15.5 ± 0.7 | 10.5 ± 0.7 |" in by_pairs  # SAIL's whole-pool runs stand here too
    by_unpaired = sections["Test mean R@1 against data.n_unpaired, n_pairs = 250 (paper Fig. 4)"]
    assert by_unpaired.index("| 1000 |") < by_unpaired.index("| all |")  # the whole pool last
    assert "| 1000 | 7.0 ± 0.7 | 14.0 ± 0.7 | 9.0 ± 0.7 |" in by_unpaired  # SAIL flat across the pool
    assert "| all | 14.0 ± 0.7 | 14.0 ± 0.7 | 16.0 ± 0.7 |" in by_unpaired
    assert "| all | +2.0 | +2.0 |" in sections["SOTAlign minus sail and teacher, n_pairs = 250"]
    [plan] = [body for heading, body in report.sections if heading.startswith("The teacher's plan")]
    assert "| data.n_pairs \\ data.n_unpaired | 1000 | all |" in plan
    assert "| 250 | 0.75% / 7.5% (0.04%) | 0.75% / 7.5% (0.04%) |" in plan  # seeds 0 and 1: 0.25, 1.25
    write_report(report, tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "n_pairs_curve_n_unpaired_1000.png",
        "n_pairs_curve_n_unpaired_all.png",
        "n_unpaired_curve_n_pairs_250.png",
        "n_unpaired_curve_n_pairs_1000.png",
    }


def test_settings_are_listed_best_on_validation_first_never_by_test():
    # alpha 30 wins on test, alpha 3 on validation: the table leads with validation and its best
    rows = [
        {**row(s, test + d / 1000, alpha=a, head_dim=d), "val/mean_recall_at_1": val - d / 1000}
        for s in (0, 1)
        for a, val, test in ((30.0, 10.0, 20.0), (3.0, 12.0, 11.0), (10.0, 11.0, 15.0))
        for d in (256, 512)
    ]
    heading, table = build_report("choice", rows).sections[0]
    assert heading == "Runs by alpha, head_dim, best on validation first"
    lines = table.splitlines()
    assert lines[0].startswith("| alpha | head_dim | val mean R@1 |")
    order = [tuple(line.split(" | ")[:2]) for line in lines[2:]]
    assert order == [
        ("| 3.0", "256"),
        ("| 3.0", "512"),
        ("| 10.0", "256"),
        ("| 10.0", "512"),
        ("| 30.0", "256"),
        ("| 30.0", "512"),
    ]
