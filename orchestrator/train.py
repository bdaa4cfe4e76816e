"""``sotalign train``: one experiment as a Ray Train run (``TorchTrainer``, Train V2).

The driver draws the experiment's data once, checks every input and fits a closed-form stage-1
teacher (``ExperimentData.preflight``: bad input is one ``InputError`` here, never a worker's retried
failure), puts both in Ray's object store, creates the MLflow run, and starts ``workers``
data-parallel workers (gloo on CPU, nccl on GPU). A contrastive teacher is trained by rank 0
once and broadcast; every worker then runs ``sotalign.fit``'s
stage 2 on its slice of each global batch (``sotalign.distributed``). Every
``checkpoint_every`` steps the whole loop state (heads, optimiser, schedule, sampler RNG,
best-so-far, teacher) is a Ray Train checkpoint; ``FailureConfig(max_failures)`` restarts
killed workers from the latest one, and the resumed run continues exactly. Rank 0 logs
metrics, the test evaluation and the artifacts to MLflow.

``workers: 0`` trains in the calling process instead (the CLI, or a sweep's trial actor): no
Train workers, checkpoints or restarts, and none of Train's ~30 s start-up per run, which is
what many small single-device trials want (the paper's grids on the bundled benchmark).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from orchestrator import logs, shipped, tracking
from orchestrator.cluster import check_cluster_fit, check_storage, connect_ray
from orchestrator.embed import ensure_tables
from orchestrator.experiment_file import RunOptions, load_experiment_file
from orchestrator.hints import command
from orchestrator.output import add_json_argument, json_output
from orchestrator.overrides import add_set_argument, parse_assignments
from orchestrator.progress import Progress
from sotalign.experiments.experiment import Experiment, ExperimentData, load_data

STATE_FILE, TEACHER_FILE, FINAL_FILE = "state.pt", "teacher.safetensors", "final.json"
WORKER_NODES_TAG = "ray.worker_nodes"  # the Ray node id of each rank, comma-separated, rank 0 first
log = logging.getLogger(__name__)


def add_parser(commands) -> None:
    p = commands.add_parser("train", help="train one experiment (YAML) on Ray Train workers, logged to MLflow")
    p.add_argument(
        "config",
        help="experiment file (name, method, seed, data:, align:, run:), or the name of a shipped one: "
        + ", ".join(shipped.names(shipped.EXPERIMENTS)),
    )
    add_set_argument(p, "override a key: alpha=3 (an AlignConfig field), data.n_pairs=100, run.workers=2, method=sail")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray Train workers (default: run.workers of the file); 0 = train in this process",
    )
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default: run.gpus_per_worker)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)",
    )
    add_json_argument(p, "the final metrics, the MLflow run id, experiment and tracking URI")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    changes = parse_assignments(args.overrides)
    if args.workers is not None:
        changes["run.workers"] = args.workers
    if args.gpus_per_worker is not None:
        changes["run.gpus_per_worker"] = args.gpus_per_worker
    experiment, options = load_experiment_file(shipped.resolve(args.config, shipped.EXPERIMENTS), changes)
    uri = tracking.tracking_uri(args.tracking_uri)
    with json_output(args.json) as emit:
        tracking.ensure_reachable(uri)  # before any data loading or training
        check_storage([experiment], options)
        ids = ensure_tables([experiment])
        data = load_data(experiment, ids)
        data.preflight(experiment.config())  # bad input stops here, before Ray starts
        if options.workers:
            connect_ray()
            check_cluster_fit(uri, options)
        metrics = train_experiment(experiment, options, uri, ids, data=data)
    if args.json:
        run_id, checkpoint = metrics.pop("run_id"), metrics.pop("checkpoint")
        emit(
            {
                "run_id": run_id,
                "experiment": experiment.name,
                "tracking_uri": uri,
                "checkpoint": checkpoint,
                "metrics": metrics,
            }
        )
        return 0
    shown = {k: round(v, 2) for k, v in metrics.items() if k.endswith(("recall_at_1", "top1"))}
    print(json.dumps(shown, indent=2))
    print(
        f"MLflow run {metrics['run_id']} in experiment {experiment.name!r} at {uri}; browse with: {command('ui', uri=uri)}"
    )
    return 0


def mlflow_params(experiment: Experiment) -> dict[str, Any]:
    """Config params: the effective ``AlignConfig`` (method and seed applied) by bare field names,
    the data spec by ``data.<field>``."""
    tree = experiment.to_dict()
    return {
        "method": experiment.method,
        **experiment.config().to_dict(),
        **{f"data.{k}": v for k, v in tree["data"].items()},
    }


def train_experiment(
    experiment: Experiment,
    options: RunOptions,
    uri: str,
    ids: dict[str, str] | None = None,
    *,
    name: str | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    callbacks: list | None = None,
    report: Callable[[dict], None] | None = None,
    tags: dict[str, str] | None = None,
    data: ExperimentData | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Run one experiment on the connected Ray cluster; return rank 0's final metrics (+ ``run_id``).

    ``run_id`` continues an existing MLflow run (a resumed sweep trial); ``callbacks`` are Ray
    Train callbacks (a sweep passes ``TuneReportCallback``), ``report`` their in-process
    counterpart (``workers: 0``; a sweep passes ``tune.report``); ``tags`` are added to the run's.
    ``name`` is the Ray Train run name (default: the MLflow run's name and id): the same name
    and storage path resume a stopped run from its checkpoints. ``data``: the experiment's data when
    the caller has loaded it already (else loaded here). ``label`` leads its progress lines (default:
    ``name``).
    """
    import ray
    import ray.train
    import ray.train.torch

    data = data or load_data(experiment, ids)
    teacher = data.preflight(experiment.config())  # bad input stops here, before Ray Train and the MLflow run
    if run_id is None:
        budget = {"n_pairs": str(len(data.paired_images)), "n_unpaired": str(data.n_unpaired)}  # as drawn
        run_tags = {**experiment.tags(), **budget, **(tags or {})}
        run_name = name or f"{experiment.name}-{experiment.method}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        run_id = tracking.start_run(uri, experiment.name, run_name, run_tags, mlflow_params(experiment), parent_run_id)
        name = name or f"{run_name}-{run_id[:8]}"  # unique: two runs never share a checkpoint folder
        if experiment.config().uses_unpaired:  # how far the unpaired data lies from the pairs (paper eq. 14)
            tracking.log_metrics(uri, run_id, data.distribution_shift(), 0)
            if data.unpaired_image_labels is not None:  # the teacher's plan on hidden partners
                teacher = teacher or data.stage1(experiment.config())
                tracking.log_metrics(uri, run_id, data.plan_diagnostic(experiment.config(), teacher), 0)
    name = name or f"{experiment.name}-{run_id}"
    where = f"on {options.workers} Ray Train worker(s)" if options.workers else "in this process"
    log.info("training %s %s: MLflow run %s in experiment %r", name, where, run_id, experiment.name)
    if options.workers == 0:
        with tracking.ending_run(uri, run_id):
            final = train_in_process(experiment, data, uri, run_id, label or name, report, teacher)
            return {**final, "run_id": run_id, "checkpoint": None}
    loop_config = {
        "experiment": experiment.to_dict(),
        "data": ray.put(data),
        "tracking_uri": uri,
        "run_id": run_id,
        "checkpoint_every": options.checkpoint_every,
        "teacher": teacher,  # the driver's closed form; None (contrastive, unless the diagnostic fitted it): rank 0 fits it
        "label": label or name,
        "log_level": logs.level(),  # the driver's --quiet / --verbose
    }
    use_gpu = options.gpus_per_worker > 0
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=options.workers,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": options.cpus_per_worker,
                **({"GPU": options.gpus_per_worker} if use_gpu else {}),
            },
        ),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=options.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),  # the latest + one in case it is torn
            callbacks=callbacks or [],
            # Ray Train's own info lines (resources, every report) drown the progress: --verbose shows them
            logging_config=ray.train.LoggingConfig(log_level="INFO" if logs.level() <= logs.VERBOSE else "WARNING"),
        ),
    )
    with tracking.ending_run(uri, run_id):
        result = trainer.fit()
    return {**result.metrics, "run_id": run_id, "checkpoint": result.checkpoint.path if result.checkpoint else None}


def train_in_process(
    experiment: Experiment,
    data,
    uri: str,
    run_id: str,
    label: str,
    report: Callable[[dict], None] | None = None,
    teacher=None,
) -> dict:
    """``workers: 0``: fit in this process, logging what rank 0 of a Train run logs and showing its
    progress (led by ``label``)."""
    import ray

    if ray.is_initialized():  # a sweep's trial actor
        tracking.client(uri).set_tag(run_id, WORKER_NODES_TAG, ray.get_runtime_context().get_node_id())

    config = experiment.config()
    progress = Progress(config.steps, label)

    def on_record(step: int, record: dict) -> None:
        progress.update(step, record)
        tracking.log_metrics(uri, run_id, {k: v for k, v in record.items() if k != "step"}, step)
        if report is not None and "val/mean_recall_at_1" in record:
            report(dict(record))

    with progress:
        model = data.fit(config, teacher=teacher, callback=on_record)
    final = _final_metrics(model, data, 0)
    _log_final(uri, run_id, model, experiment, data, final)
    if report is not None:
        report(final)
    return final


def _log_final(uri: str, run_id: str, model, experiment: Experiment, data, final: dict) -> None:
    """The test metrics, the model (with its encoders and data, for ``sotalign search``), the teacher,
    config.yaml, eval.json, the training plot, the retrieval gallery and the failure summary."""
    from orchestrator.inspection import inspection_files  # PIL drawing: rank 0 only
    from orchestrator.plots import plot_history  # matplotlib: rank 0 only

    model.provenance = provenance(experiment)
    files, tags = inspection_files(experiment, data, model)
    tracking.log_metrics(uri, run_id, final, int(final["step"]))
    tracking.log_model_artifacts(
        uri,
        run_id,
        model,
        experiment.to_dict(),
        final,
        files={"plots/training.png": lambda path: plot_history(model.history, path), **files},
    )
    tracking.set_tags(uri, run_id, tags)  # after the writers: a gallery that could not be drawn says why


def provenance(experiment: Experiment) -> dict[str, str | None]:
    """What a saved model was trained on: its frozen encoders (a query is embedded with them) and the
    store and dataset its test split lives in (``sotalign search``'s defaults)."""
    data = experiment.data
    test = data.test_ref()
    return {
        "image_encoder": data.image_encoder,
        "text_encoder": data.text_encoder,
        "dataset": (test or data.pairs_ref()).dataset,
        "store": data.store,
        "split": test.split if test else None,
    }


# ---------------------------------------------------------------------------------------------
# What every Ray Train worker runs.


def train_worker(loop_config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from sotalign.distributed import DistributedContext
    from sotalign.stage2 import Checkpointing
    from sotalign.teachers import Teacher
    from sotalign.two_stage import checked_inputs, fit_stage1

    logs.configure(loop_config["log_level"])  # a worker process: set up as its driver is
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    experiment = Experiment.from_dict(loop_config["experiment"])
    config = experiment.config().replace(device=str(ray.train.torch.get_device()))
    data = ray.get(loop_config["data"])
    uri, run_id = loop_config["tracking_uri"], loop_config["run_id"]
    distributed = DistributedContext(rank, world) if world > 1 else None
    nodes = [ray.get_runtime_context().get_node_id()] * world
    if distributed is not None:
        dist.all_gather_object(nodes, nodes[0])
    if rank == 0:  # where the ranks run now (a restart after a node loss moves them)
        tracking.client(uri).set_tag(run_id, WORKER_NODES_TAG, ",".join(nodes))

    state, teacher, resumed_from = None, None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            if (Path(folder) / FINAL_FILE).is_file():  # the run had finished: report it again
                final = json.loads((Path(folder) / FINAL_FILE).read_text())
                ray.train.report(final if rank == 0 else {})
                return
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
            teacher = Teacher.load(Path(folder) / TEACHER_FILE)
            resumed_from = state["step"]
            if rank == 0:
                log.info("[%s] resumed from the checkpoint of step %d", loop_config["label"], resumed_from)
    teacher = teacher or loop_config["teacher"]  # a checkpoint's, else the driver's (fitted for the diagnostic)
    if teacher is None:  # stage 1 once, on rank 0; the other ranks receive it
        box = [None]
        if rank == 0:
            a, b, x, y, _ = checked_inputs(
                data.paired_images, data.paired_texts, data.unpaired_images, data.unpaired_texts, None, config
            )
            box = [fit_stage1(a, b, x, y, config)]
        if distributed is not None:
            dist.broadcast_object_list(box, src=0)
        teacher = box[0]

    every = loop_config["checkpoint_every"]
    pending: dict[str, str] = {}
    logged_until = (
        _last_logged_step(uri, run_id) if rank == 0 and resumed_from else 0
    )  # steps logged before the failure

    def save(step: int, loop_state: dict) -> None:
        if rank == 0:
            folder = tempfile.mkdtemp(prefix=f"sotalign-ckpt-{step}-")
            torch.save(loop_state, Path(folder) / STATE_FILE)
            teacher.save(Path(folder) / TEACHER_FILE)
            pending["folder"] = folder
            log.debug("[%s] checkpoint of step %d", loop_config["label"], step)

    progress = Progress(config.steps, loop_config["label"], show=rank == 0)  # the driver sees rank 0's lines

    def on_record(step: int, record: dict) -> None:
        progress.update(step, record)
        if rank == 0 and step > logged_until:
            tracking.log_metrics(uri, run_id, {k: v for k, v in record.items() if k != "step"}, step)
        if "val/mean_recall_at_1" in record or (every and step % every == 0):  # collective: same steps on every rank
            folder = pending.pop("folder", None)
            ray.train.report(
                {**record, "resumed_from_step": resumed_from},
                checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None,
            )
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    with progress:
        model = data.fit(
            config,
            teacher=teacher,
            callback=on_record,
            distributed=distributed,
            checkpointing=Checkpointing(every, save, state),
        )
    if rank != 0:
        ray.train.report({})
        return
    final = _final_metrics(model, data, resumed_from)
    _log_final(uri, run_id, model, experiment, data, final)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / FINAL_FILE).write_text(json.dumps(final))
        model.save(Path(folder) / "model")
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _last_logged_step(uri: str, run_id: str) -> int:
    """The last step whose losses reached MLflow (a restarted worker must not log them twice)."""
    history = tracking.client(uri).get_metric_history(run_id, "loss/total")
    return max((m.step for m in history), default=0)


def _final_metrics(model, data, resumed_from: int) -> dict[str, float]:
    """Test metrics of the selected model, its validation scores, the step count and the resume point."""
    with torch.no_grad():
        test, val = data.evaluate(model), data.validate(model)
    last = model.history[-1] if model.history else {}
    return {
        **test,
        **{f"val/{k}": v for k, v in val.items()},
        "step": float(model.config.steps),
        "best_step": float(last.get("best_step", last.get("step", 0))),
        "resumed_from_step": float(resumed_from),
    }
