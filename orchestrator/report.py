"""``sotalign report --experiment E``: an experiment's runs as the paper lays them out.

The runs of one MLflow experiment (the trials of a ``search_spaces/paper_*.yaml`` sweep, or any
runs) become Markdown tables of mean ± std over seeds, next to the paper's own numbers where it
has them, and PNG plots. The layout follows what the runs vary: teacher x divergence (Table 1),
the unpaired data's source (Table 7), a budget (Fig. 4, when only budgets and the method vary; with
both budgets varied, one curve per value of the other, and the teacher's plan diagnostic per
budget cell), the epsilons, or the method (Tables 4/5); anything else is one row per combination.
Everything is written to ``--out`` and logged to a ``report`` run of the same experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator import tracking
from sotalign.checks import InputError
from sotalign.config import AlignConfig
from sotalign.experiments.paper_results import TABLE1, TABLE4
from sotalign.experiments.results import cell, format_table, seeds_of, summarize
from sotalign.methods import METHODS

VARIED = (
    "method",
    "teacher",
    "divergence",
    "eps_student",
    "eps_teacher",
    "alpha",
    "mass",
    "head_init",
    "head_dim",
    "teacher_cov_normalize",
    "lr",
    "steps",
    "batch_unpaired",
    "data.n_pairs",
    "data.n_unpaired",
    "data.unpaired_images",
    "data.unpaired_texts",
    "encoder_pair",
)
RETRIEVAL = ("t2i_recall_at_1", "t2i_recall_at_5", "i2t_recall_at_1", "i2t_recall_at_5", "mean_recall_at_1")
VAL = "val/mean_recall_at_1"  # what sweeps select by (search_spaces/*.yaml `metric:`)
LABELS = {
    VAL: "val mean R@1",
    "t2i_recall_at_1": "T2I R@1",
    "t2i_recall_at_5": "T2I R@5",
    "i2t_recall_at_1": "I2T R@1",
    "i2t_recall_at_5": "I2T R@5",
    "mean_recall_at_1": "mean R@1",
    "digits_top1": "digits top-1",
    "ssw/total": "SSW total",
    "diagnostic/plan_mass_on_partners": "teacher plan mass on partners %",
    "diagnostic/chance_mass_on_partners": "chance %",
}
DIVERGENCE_ORDER = ("none", "cka", "ginfonce", "klot")
TEACHER_ORDER = ("procrustes", "cca", "contrastive")
METHOD_ORDER = (
    "teacher",
    "asif",
    "csa",
    "sail",
    "structure",
    "semi_sail",
    "semi_structure",
    "nnclr",
    "sclip",
    "sotalign",
)  # paper Table 4
PAPER_NOTE = "paper: DINOv3 ViT-L + NV-Embed-v2, 10k CC3M pairs + 1M unpaired, COCO (docs/notes/paper.md 6)"


@dataclass
class Report:
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, Markdown)
    figures: dict[str, Callable[[Path], object]] = field(default_factory=dict)  # file name -> writer

    def markdown(self) -> str:
        parts = [f"# {self.title}"] + [f"## {heading}\n\n{body}" for heading, body in self.sections]
        parts += [f"![{name}]({name})" for name in self.figures]
        return "\n\n".join(parts) + "\n"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "report", help="tables (mean ± std over seeds, next to the paper's) and plots of an experiment's runs"
    )
    p.add_argument(
        "--experiment", required=True, help="MLflow experiment, e.g. paper-table4 (one per search_spaces/paper_*.yaml)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="folder for report.md and the PNGs (default reports/<experiment>)"
    )
    p.add_argument("--metric", default="mean_recall_at_1", help="the headline test metric (default mean_recall_at_1)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    uri = tracking.tracking_uri(args.tracking_uri)
    tracking.ensure_reachable(uri)
    rows = collect_runs(uri, args.experiment, args.metric)
    report = build_report(args.experiment, rows, args.metric)
    folder = args.out or Path("reports") / args.experiment
    write_report(report, folder)
    run_id = tracking.start_run(
        uri,
        args.experiment,
        f"report-{datetime.datetime.now():%Y%m%d-%H%M%S}",
        {"report": "true", "runs": str(len(rows))},
        {},
    )
    with tracking.ending_run(uri, run_id):
        tracking.client(uri).log_artifacts(run_id, str(folder), "report")
    print(report.markdown())
    print(
        f"wrote {folder}/report.md and {len(report.figures)} plot(s); logged to MLflow run {run_id} of {args.experiment!r}"
    )
    return 0


def collect_runs(uri: str, experiment: str, metric: str) -> list[dict]:
    """One row per finished run with a test ``metric``: its varied params (typed), seed and metrics."""
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise InputError(f"no MLflow experiment {experiment!r} at {uri}; experiments: {names}")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    rows = []
    for r in runs:
        if metric not in r.data.metrics:
            continue  # sweep parents, reports, runs stopped early
        params = {k: _param_value(v) for k, v in r.data.params.items()}
        row = {**r.data.metrics, **{k: params.get(k) for k in VARIED if k in params}}  # a param wins over a metric (lr)
        row.update(
            encoder_pair=r.data.tags.get("encoder_pair"),
            seed=params.get("seed"),
            depends_on_unpaired=_config(params).depends_on_unpaired,
        )
        rows.append(row)
    if not rows:
        raise InputError(f"none of the {len(runs)} finished runs of {experiment!r} has the test metric {metric!r}")
    return rows


def _config(params: dict) -> AlignConfig:
    """The run's AlignConfig back from its logged params (fields it predates take their defaults)."""
    names = {f.name for f in dataclasses.fields(AlignConfig)}
    return AlignConfig(**{k: v for k, v in params.items() if k in names})


def _param_value(text: str):
    """A logged param back as a value; MLflow stores Python's None as "None", and a param a run
    predates (logged by later versions only) is None too, so the two never count as different."""
    return None if text in ("", "None") else yaml.safe_load(text)


def varied(rows: list[dict], presets: bool = False) -> list[str]:
    """The params that take more than one value across the runs (seed aside). A value a method's
    preset fixes (the teacher method's ``steps: 0``) does not count, unless ``presets``."""

    def free(row: dict, key: str) -> bool:
        return presets or key not in METHODS.get(row.get("method"), METHODS["sotalign"]).preset

    return [k for k in VARIED if len({json.dumps(r.get(k)) for r in rows if free(r, k)}) > 1]


def build_report(experiment: str, rows: list[dict], metric: str = "mean_recall_at_1") -> Report:
    keys = varied(rows)
    report = Report(f"{experiment}: {len(rows)} runs, {len({r['seed'] for r in rows})} seed(s)")
    if {"teacher", "divergence"} <= set(varied(rows, presets=True)):  # Table 1's "none" row is the teacher method
        _teacher_by_divergence(report, rows, metric)
    elif {"data.unpaired_images", "data.unpaired_texts"} & set(keys):
        _unpaired_sources(report, rows, metric)
    elif {"data.n_pairs", "data.n_unpaired"} & set(keys) and set(keys) <= {"method", "data.n_pairs", "data.n_unpaired"}:
        _budget_curves(report, rows, metric, [k for k in ("data.n_pairs", "data.n_unpaired") if k in keys])
    elif "alpha" in keys and set(keys) <= {"alpha", "mass"}:
        _curves(report, rows, metric, "alpha", "mass", "paper.md 3.5: alpha x plan mass")
    elif {"eps_student", "eps_teacher"} <= set(keys):
        _epsilon_grid(report, rows, metric)
    elif keys == ["method"]:
        _methods(report, rows, metric)
    else:
        _settings(report, rows, keys or ["method"])
    return report


def write_report(report: Report, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, writer in report.figures.items():
        writer(folder / name)
    (folder / "report.md").write_text(report.markdown())


# ---------------------------------------------------------------------------------------------
# Layouts


def _show(value) -> str:
    """A cell label; a budget of None is the whole pool."""
    return "all" if value is None else str(value)


def _ordered(values) -> list:
    """Budget values in increasing order, None (the whole pool) last."""
    return sorted(v for v in values if v is not None) + ([None] if None in values else [])


def _grid(rows, metric, row_key, col_key, row_values, col_values, fmt=_show) -> str:
    stats = summarize(rows, metric, (row_key, col_key))
    lines = [
        f"| {row_key} \\ {col_key} | " + " | ".join(fmt(c) for c in col_values) + " |",
        "|---" * (len(col_values) + 1) + "|",
    ]
    seeds = {(r, c): seeds_of(rows, (row_key, col_key), (r, c)) for r in row_values for c in col_values}
    full = max(seeds.values(), default=0)
    for r in row_values:
        cells = [cell(stats.get((r, c)), seeds[r, c], full=full) for c in col_values]
        lines.append(f"| {fmt(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _teacher_by_divergence(report: Report, rows, metric) -> None:
    divergences = [d for d in DIVERGENCE_ORDER if any(r.get("divergence") == d for r in rows)]
    teachers = [t for t in TEACHER_ORDER if any(r.get("teacher") == t for r in rows)]
    report.sections.append(
        (
            f"Test {LABELS.get(metric, metric)} by divergence and linear teacher (paper Table 1; "
            "'none' = the teacher alone)",
            _grid(rows, metric, "divergence", "teacher", divergences, teachers),
        )
    )
    paper = ["| divergence \\ teacher | " + " | ".join(teachers) + " |", "|---" * (len(teachers) + 1) + "|"]
    paper += [f"| {d} | " + " | ".join(f"{TABLE1[d][t]:.1f}" for t in teachers) + " |" for d in divergences]
    report.sections.append((f"The paper's Table 1 (COCO mean R@1; {PAPER_NOTE})", "\n".join(paper)))
    stats = summarize(rows, metric, ("divergence", "teacher"))

    def draw(path):
        from orchestrator.plots import plt, save_figure

        fig, ax = plt.subplots(figsize=(1.8 * len(teachers) + 2, 0.8 * len(divergences) + 1.5))
        grid = [[stats.get((d, t), (float("nan"), 0))[0] for t in teachers] for d in divergences]
        image = ax.imshow(grid, cmap="viridis")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="white")
        ax.set_xticks(range(len(teachers)), teachers)
        ax.set_yticks(range(len(divergences)), divergences)
        fig.colorbar(image, label=f"test {metric}")
        ax.set_title("teacher x divergence (mean over seeds)")
        save_figure(fig, path)

    report.figures["teacher_by_divergence.png"] = draw


def _settings(report: Report, rows, groups: list[str]) -> None:
    """One row per combination of the varied settings. Where the runs were scored on validation,
    that score comes first and orders the rows: a setting is chosen by it, the test columns beside
    it are only read once the choice is made."""
    if not any(r.get(VAL) is not None for r in rows):
        report.sections.append(
            ("Runs by " + ", ".join(groups), format_table(rows, _present(rows, RETRIEVAL), groups, LABELS))
        )
        return
    table = format_table(rows, [VAL, *_present(rows, RETRIEVAL)], groups, LABELS, sort_by=VAL)
    report.sections.append(("Runs by " + ", ".join(groups) + ", best on validation first", table))


def _methods(report: Report, rows, metric) -> None:
    order = [m for m in METHOD_ORDER if any(r.get("method") == m for r in rows)]
    rows = sorted(rows, key=lambda r: order.index(r["method"]))
    metrics = _present(rows, (*RETRIEVAL, "digits_top1"))
    report.sections.append(
        (
            "Test retrieval and zero-shot classification by method (paper Tables 4/5)",
            format_table(rows, metrics, ("method",), LABELS),
        )
    )
    paper = ["| method | COCO T2I R@1 | T2I R@5 | I2T R@1 | I2T R@5 | ImageNet top-1 |", "|---|---|---|---|---|---|"]
    paper += [f"| {m} | " + " | ".join(f"{v:.1f}" for v in TABLE4[m]) + " |" for m in order if m in TABLE4]
    report.sections.append((f"The paper's Tables 4/5 ({PAPER_NOTE})", "\n".join(paper)))
    stats = summarize(rows, metric, ("method",))

    def draw(path):
        from orchestrator.plots import plt, save_figure

        fig, ax = plt.subplots(figsize=(1.1 * len(order) + 2, 3.8))
        ax.bar(
            range(len(order)),
            [stats[(m,)][0] for m in order],
            yerr=[stats[(m,)][1] for m in order],
            capsize=4,
            color=["tab:red" if m == "sotalign" else "tab:blue" for m in order],
        )
        ax.set_xticks(range(len(order)), order, rotation=25, ha="right")
        ax.set_ylabel(f"test {metric}")
        ax.set_title("methods (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        save_figure(fig, path)

    report.figures["methods.png"] = draw


def _budget_curves(report: Report, rows, metric, budgets: list[str]) -> None:
    """Paper Fig. 4: the metric against each varied budget; when both vary, one table and plot per
    value of the other (a pairs curve per unpaired pool, an unpaired curve per pair budget)."""
    if "data.n_unpaired" in budgets:
        rows = _at_every_unpaired_budget(rows)
    _plan_diagnostic(report, rows, budgets)
    for x in budgets:
        other = next((k for k in budgets if k != x), None)
        for value in _ordered({r.get(other) for r in rows}) if other else [None]:
            subset = [r for r in rows if other is None or r.get(other) == value]
            _curves(
                report,
                subset,
                metric,
                x,
                "method",
                "paper Fig. 4",
                at=f"{other.split('.')[-1]} = {_show(value)}" if other else None,
            )


def _plan_diagnostic(report: Report, rows, budgets: list[str]) -> None:
    """Per budget cell, how much of the teacher's OT plan on an unpaired batch lies on the true
    partners (and how often a row's argmax is the partner), next to chance: the quantity that
    predicts whether KLOT can add anything over the teacher. Only where the runs logged it."""
    have = [r for r in rows if "diagnostic/plan_mass_on_partners" in r]
    if not have:
        return
    keys = tuple(budgets)
    stats = {
        name: summarize(have, f"diagnostic/{name}", keys)
        for name in ("plan_mass_on_partners", "plan_argmax_on_partners", "chance_mass_on_partners")
    }
    axes = [_ordered({r.get(k) for r in have}) for k in keys]
    columns = axes[1] if len(keys) == 2 else [None]
    heads = [f"{keys[0]} \\ {keys[1]}", *map(_show, columns)] if len(keys) == 2 else [keys[0], "teacher's plan"]
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for value in axes[0]:
        cells = []
        for column in columns:
            key = (value, column) if len(keys) == 2 else (value,)
            if key not in stats["plan_mass_on_partners"]:
                cells.append("–")
                continue
            mass, argmax, chance = (stats[name][key][0] for name in stats)
            cells.append(f"{mass:.2f}% / {argmax:.1f}% ({chance:.2f}%)")
        lines.append(f"| {_show(value)} | " + " | ".join(cells) + " |")
    report.sections.append(
        (
            "The teacher's plan on an unpaired batch: mass on true partners / rows whose argmax is the partner "
            "(chance mass), mean over seeds",
            "\n".join(lines),
        )
    )


def _at_every_unpaired_budget(rows: list[dict]) -> list[dict]:
    """The runs of a method the unpaired data does not change (SAIL) copied to every unpaired
    budget the method was not run at: one SAIL run per pair budget draws its flat line across."""
    budgets = {r.get("data.n_unpaired") for r in rows}
    filled = list(rows)
    for method in {r.get("method") for r in rows if not r["depends_on_unpaired"]}:
        own = [r for r in rows if r.get("method") == method]
        if any(r["depends_on_unpaired"] for r in own):
            continue  # the same method run both ways (another centring): leave it as run
        ran_at = {r.get("data.n_unpaired") for r in own}
        source = _ordered(ran_at)[-1]  # one budget's runs, so that no seed counts twice
        filled += [
            {**r, "data.n_unpaired": b} for b in budgets - ran_at for r in own if r.get("data.n_unpaired") == source
        ]
    return filled


def _curves(report: Report, rows, metric, x: str, line: str, source: str, at: str | None = None) -> None:
    """Metric against a numeric ``x`` (log axis; None = the whole pool, drawn last), one line per
    value of ``line``; ``at`` names what the rows share (in the headings and the plot's file name)."""
    known = METHOD_ORDER if line == "method" else sorted({str(r.get(line)) for r in rows})
    lines = [v for v in known if any(str(r.get(line)) == v for r in rows)]
    values = _ordered({r[x] for r in rows})
    where = f", {at}" if at else ""
    report.sections.append(
        (
            f"Test {LABELS.get(metric, metric)} against {x}{where} ({source})",
            _grid(rows, metric, x, line, values, lines),
        )
    )
    stats = summarize(rows, metric, (x, line))
    references = [m for m in ("sail", "teacher") if m in lines]  # what SOTAlign is compared with
    if line == "method" and "sotalign" in lines and references:
        gains = [
            f"| {_show(v)} | "
            + " | ".join(
                f"{stats[(v, 'sotalign')][0] - stats[(v, m)][0]:+.1f}" if (v, m) in stats else "–" for m in references
            )
            + " |"
            for v in values
            if (v, "sotalign") in stats
        ]
        header = (
            f"| {x} | "
            + " | ".join(f"gain over {m}" for m in references)
            + " |\n"
            + "|---" * (len(references) + 1)
            + "|\n"
        )
        report.sections.append((f"SOTAlign minus {' and '.join(references)}{where}", header + "\n".join(gains)))
    numbers = [v for v in values if v is not None]
    position = {
        v: (2 * max(numbers, default=1) if v is None else v) for v in values
    }  # the whole pool right of the rest

    def draw(path):
        from orchestrator.plots import plt, save_figure

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for value in lines:
            points = [(position[v], *stats[(v, value)]) for v in values if (v, value) in stats]
            if points:
                xs, means, stds = zip(*points)
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{line} {value}")
        ax.set_xscale("log")
        ax.set_xticks([position[v] for v in values], ["all" if v is None else f"{v:g}" for v in values], minor=False)
        ax.minorticks_off()
        ax.set_xlabel(x)
        ax.set_ylabel(f"test {LABELS.get(metric, metric)}")
        ax.set_title("mean ± std over seeds" + (f" ({at})" if at else ""))
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, path)

    suffix = "" if at is None else "_" + at.replace(" = ", "_")
    report.figures[f"{x.split('.')[-1]}_curve{suffix}.png"] = draw


def _unpaired_sources(report: Report, rows, metric) -> None:
    for r in rows:
        r["unpaired images"] = r.get("data.unpaired_images") or "pool (same source)"
        r["unpaired texts"] = r.get("data.unpaired_texts") or "pool (same source)"
    by = ("method", "unpaired images", "unpaired texts")
    metrics = _present(
        rows,
        (
            "t2i_recall_at_1",
            "i2t_recall_at_1",
            "mean_recall_at_1",
            "digits_top1",
            "ssw/total",
            "diagnostic/plan_mass_on_partners",
            "diagnostic/chance_mass_on_partners",
        ),
    )
    report.sections.append(
        (
            "Test metrics by source of the unpaired data, with the SSW distance to the pairs (paper Table 7) "
            "and, where the unpaired pairing is known, the share of the teacher's OT plan on true partners",
            format_table(
                rows,
                metrics,
                by,
                LABELS,
                digits={"ssw/total": 3, "diagnostic/plan_mass_on_partners": 2, "diagnostic/chance_mass_on_partners": 2},
            ),
        )
    )
    points = [(r["ssw/total"], r[metric]) for r in rows if r.get("ssw/total") is not None]

    def draw(path):
        from orchestrator.plots import plt, save_figure

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key in summarize(rows, metric, by[1:]):
            group = [
                (r["ssw/total"], r[metric])
                for r in rows
                if (r["unpaired images"], r["unpaired texts"]) == key and "ssw/total" in r
            ]
            if group:
                ax.scatter(*zip(*group), label=" / ".join(key))
        ax.set_xlabel("SSW(X, A) + SSW(Y, B)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title("gain vs distribution shift (paper Fig. 5)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save_figure(fig, path)

    if points:
        report.figures["shift.png"] = draw


def _epsilon_grid(report: Report, rows, metric) -> None:
    teacher = sorted({r["eps_teacher"] for r in rows})
    student = sorted({r["eps_student"] for r in rows})
    report.sections.append(
        (
            f"Test {LABELS.get(metric, metric)} by teacher and student epsilon (no paper counterpart; "
            "paper: 0.01 / 0.05, released code: 0.005 / 0.05)",
            _grid(rows, metric, "eps_teacher", "eps_student", teacher, student),
        )
    )


def _present(rows, metrics) -> list[str]:
    return [m for m in metrics if any(r.get(m) is not None for r in rows)]
