"""A sweep's steps in order, pycls-style: sample (plan.json), run (this shard's jobs), collect, recheck, analyse.

The run step appends one line per finished job to this shard's JSONL file (see core.joblog): a
kill at any moment loses at most the job in progress, and the same command resumes. Collect merges
the shard files into results.jsonl. Recheck (asked for with --recheck) trains a spread of the
ranking again at three times the budget into recheck.jsonl, as RegNet checked that its
conclusions hold at more epochs. Analyse reads whatever results exist, so it works on partial
sweeps, and writes the report, figures, variants.csv and analysis.json.
"""

import dataclasses
import glob
import json
import math
import os
from typing import Optional

from core import cli, files, joblog
from core.errors import UserError
from explore import analyse as analyse_lib
from explore import jobs as jobs_lib
from explore import plan as plan_lib
from explore import report
from measure import device as device_lib
from measure import results
from train import synthetic  # NumPy only: no TensorFlow, JAX or data

STEPS = ("sample", "run", "collect", "recheck", "analyse")
DEFAULT_STEPS = ("sample", "run", "collect", "analyse")  # recheck costs three budgets per variant it trains
LOG_NAME, RECHECK_NAME = analyse_lib.LOG_NAME, analyse_lib.RECHECK_NAME
RECHECK_FACTOR = 3  # the recheck's budget, in budgets of the sweep
RECHECK_SHARE = 0.25  # of the trained variants, spread across the ranking (at least 3)
RUN_NAME = "run.json"  # the run settings and device every result of the directory was computed with
# Run settings that add jobs, or change only what new jobs record, rather than what a result means.
ADDITIVE = ("measure", "train", "seeds", "seed_subset", "curve_points")
OUTPUTS = (plan_lib.PLAN_NAME, RUN_NAME, LOG_NAME, RECHECK_NAME, report.CSV_NAME, report.JSON_NAME, *report.NAMES)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A whole `python -m explore` invocation."""

    out_dir: str
    plan: plan_lib.PlanSettings
    run: jobs_lib.RunSettings = jobs_lib.RunSettings()
    steps: tuple[str, ...] = DEFAULT_STEPS
    shard_index: int = 0
    num_shards: int = 1
    energy_budgets_j: tuple[float, ...] = ()  # empty: log-spaced over the variants' energies
    networks_dir: Optional[str] = None  # a main-job results directory: the 14 networks for context
    overwrite: bool = False


def check(settings: Settings) -> None:
    """Refuses bad settings before anything runs, in one line (UserError)."""
    unknown = [s for s in settings.steps if s not in STEPS]
    if unknown or not settings.steps:
        raise UserError(f"unknown step {', '.join(unknown) or '(none)'}; choose from: {', '.join(STEPS)}")
    plan_lib.check(settings.plan)
    if "sample" in settings.steps:
        plan_lib.check_size(settings.plan)  # only sampling costs variants: later steps read plan.json
    run = settings.run
    if "recheck" in settings.steps and not run.train:
        raise UserError("--steps=recheck trains variants again at a larger budget: drop --notrain")
    if "run" in settings.steps and not (run.measure or run.train):
        raise UserError("nothing to run: --nomeasure and --notrain together leave no job; drop one of them")
    if run.train and {"run", "recheck"} & set(settings.steps):
        try:
            from train import config as train_config, input_pipeline  # the train extra
        except ImportError as error:
            raise UserError(f"training variants needs the train extra ({error.name} is missing): "
                            "pip install -e '.[train]', or pass --notrain") from None
        train_config.check(run.train_config("resnet18", run.seeds[0] if run.seeds else 0))
        info = input_pipeline.dataset_info(run.dataset, run.data_dir)  # UserError when missing
        if run.train_batch_size > info.train_examples:
            raise UserError(f"--train_batch_size {run.train_batch_size} is larger than {info.name}'s "
                            f"{info.train_examples} training examples; use a smaller one")
    if not run.seeds:
        raise UserError("--seeds is empty; give at least one training seed, e.g. --seeds=0")
    if not all(0 < b < float("inf") for b in settings.energy_budgets_j):  # NaN fails both comparisons
        raise UserError(f"energy budgets must be positive finite numbers; got {list(settings.energy_budgets_j)}")
    networks = settings.networks_dir
    if "analyse" in settings.steps and networks:
        # Read as the analyse step will, so that a bad directory fails now rather than after the whole sweep;
        # results.read takes a missing directory or file for no results, which here is a mistyped path.
        fix = "give a directory python -m measure wrote, or leave --networks_results out"
        if not os.path.isdir(networks):
            raise UserError(f"--networks_results {networks} "
                            f"{'is not a directory' if os.path.exists(networks) else 'does not exist'}; {fix}")
        if not os.path.isfile(os.path.join(networks, results.JSON_NAME)):
            raise UserError(f"--networks_results {networks} holds no {results.JSON_NAME}; {fix}")
        try:
            results.read(networks)
        except UserError as error:
            # Its own fixes name measure's --out and --overwrite; here --overwrite would discard the sweep.
            raise UserError(f"--networks_results: {str(error).rsplit('; ', 1)[0]}; {fix}") from None


def _overwrite(out_dir: str) -> None:
    """Removes a sweep's files from out_dir; refuses while a shard is running."""
    shards = joblog.shard_files(os.path.join(out_dir, LOG_NAME)) + joblog.shard_files(os.path.join(out_dir, RECHECK_NAME))
    for path in shards:
        with joblog.shard_lock(path):  # UserError naming the process still writing it
            pass
    for path in [*shards, *(os.path.join(out_dir, name) for name in OUTPUTS),
                 *glob.glob(os.path.join(glob.escape(out_dir), "figures", "*"))]:
        if os.path.isfile(path):
            os.remove(path)


def run(settings: Settings, log=print) -> Optional[analyse_lib.Analysis]:
    """Runs the requested steps in order; returns the analysis when it was a step."""
    check(settings)
    if synthetic.is_synthetic(settings.run.dataset):  # one task, one string: in job keys, run.json and reports
        settings = dataclasses.replace(settings, run=dataclasses.replace(
            settings.run, dataset=str(synthetic.parse(settings.run.dataset))))
    out = settings.out_dir
    files.prepare_out_dir(out)
    if settings.overwrite:
        _overwrite(out)
    planned = None
    if "sample" in settings.steps:
        planned = plan_lib.load_or_make(settings.plan, out, log)
    if "run" in settings.steps:
        planned = planned or plan_lib.read(out)[1]
        device = device_lib.default_device()
        _check_same_run(settings.run, device_lib.device_name(device), out)
        todo = jobs_lib.job_list(planned, settings.run, device_lib.device_name(device))
        log(f"run: {len(todo)} jobs for {len(planned)} variants; shard {settings.shard_index} of {settings.num_shards}")
        runner = jobs_lib.Runner(settings.run, device, log)
        try:
            joblog.run_jobs(todo, os.path.join(out, LOG_NAME), runner, settings.shard_index, settings.num_shards, log,
                           unit=lambda payload: payload["variant"], describe=jobs_lib.describe)
        finally:
            runner.close()
    cli.check_stop()  # a stop asked for during the last job ends the run before the next step
    if "collect" in settings.steps:
        merged = joblog.collect(os.path.join(out, LOG_NAME))
        log(f"collect: {len(merged)} results in {os.path.join(out, LOG_NAME)}")
    if "recheck" in settings.steps:
        cli.check_stop()
        _recheck(settings, planned or plan_lib.read(out)[1], log)
    if "analyse" not in settings.steps:
        return None
    cli.check_stop()
    plan_settings, variants = analyse_lib.load(out)
    networks = results.read(settings.networks_dir).rows if settings.networks_dir else []
    analysis = analyse_lib.analyse(variants, settings.energy_budgets_j, networks)
    written = report.write(analysis, plan_settings, run_summary(out), out)
    log(f"analyse: wrote {len(written)} files; the report is {os.path.join(out, report.NAMES[0])} "
        f"(and {report.NAMES[1]}), the figures are in {os.path.join(out, 'figures')}")
    return analysis


def recheck_settings(run: jobs_lib.RunSettings) -> jobs_lib.RunSettings:
    """The recheck's run settings: training only, one seed, RECHECK_FACTOR times the budget."""
    return dataclasses.replace(run, measure=False, train=True, train_steps=run.train_steps * RECHECK_FACTOR,
                               seeds=run.seeds[:1])


def recheck_variants(variants: list[analyse_lib.VariantResult]) -> list[str]:
    """A share of the trained variants spread evenly across their ranking by top-1, least accurate first."""
    ranked = sorted((v for v in variants if v.accuracy is not None), key=lambda v: (v.accuracy, v.variant))
    count = min(len(ranked), max(3, math.ceil(RECHECK_SHARE * len(ranked))))
    return [ranked[i].variant for i in jobs_lib.spread(len(ranked), count)]


def _recheck(settings: Settings, planned: list, log) -> None:
    """Trains a spread of the ranking again at RECHECK_FACTOR times the budget, into recheck.jsonl."""
    out = settings.out_dir
    _, variants = analyse_lib.load(out)
    chosen = set(recheck_variants(variants))
    if len(chosen) < 3:
        raise UserError(f"--steps=recheck needs at least 3 trained variants in {out}; {len(chosen)} are: "
                        "run the sweep first (--steps=sample,run,collect)")
    device = device_lib.default_device()
    _check_same_run(settings.run, device_lib.device_name(device), out)
    run = recheck_settings(settings.run)
    todo = jobs_lib.job_list([p for p in planned if p.variant in chosen], run, device_lib.device_name(device))
    log(f"recheck: {len(todo)} variants of {len(variants)} trained again at {RECHECK_FACTOR}x the budget "
        f"({run.train_steps} steps)")
    runner = jobs_lib.Runner(run, device, log)
    try:
        joblog.run_jobs(todo, os.path.join(out, RECHECK_NAME), runner, settings.shard_index, settings.num_shards, log,
                       unit=lambda payload: payload["variant"], describe=jobs_lib.describe)
    finally:
        runner.close()


def _run_record(run: jobs_lib.RunSettings, device: str) -> dict:
    """The run settings and device as run.json holds them (what every result line depends on)."""
    return json.loads(json.dumps({**dataclasses.asdict(run), "device": device}))


def _check_same_run(run: jobs_lib.RunSettings, device: str, out_dir: str) -> None:
    """Writes run.json, or refuses a run whose settings or device differ from the results already there."""
    path, record = os.path.join(out_dir, RUN_NAME), _run_record(run, device)
    stored = _read_run(out_dir)
    if stored:
        changed = sorted(k for k in set(stored) | set(record) if k not in ADDITIVE and stored.get(k) != record.get(k))
        if changed:
            raise UserError(f"{path}: the results there were computed with other {', '.join(changed)}; they would "
                            "mix with this run's: choose another --out, or pass --overwrite to start afresh")
        # More seeds, or timing a sweep that was only trained, adds jobs without changing any result.
        record.update(measure=record["measure"] or stored.get("measure", False),
                      train=record["train"] or stored.get("train", False),
                      seeds=sorted(set(record["seeds"]) | set(stored.get("seeds", []))))
    if record != stored:
        files.atomic_write(path, json.dumps(record, indent=1) + "\n")


def _a_record(data) -> dict:
    """A decoded run record, which must be an object."""
    if not isinstance(data, dict):
        raise files.Malformed("not an object")
    return data


def _read_run(out_dir: str) -> dict:
    """run.json's record ({} when no run step has written it); UserError naming a corrupt file."""
    try:
        return files.read_json(os.path.join(out_dir, RUN_NAME), "a run record this program wrote",
                               "move it away or pass --overwrite", check=_a_record)
    except FileNotFoundError:
        return {}


def run_summary(out_dir: str) -> dict:
    """What the report says about how the directory's accuracies were obtained, from run.json."""
    record = _read_run(out_dir)
    if not record.get("train"):
        return {"dataset": record.get("dataset", "(not trained)"), "budget": "(no training)", "seeds": []}
    run = jobs_lib.RunSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()
                                  if k in {f.name for f in dataclasses.fields(jobs_lib.RunSettings)}})
    return {"dataset": run.dataset, "budget": run.budget().replace(",", ", "), "seeds": list(run.seeds)}
