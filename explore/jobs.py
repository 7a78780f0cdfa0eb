"""The run step's jobs: timing a variant on the device, and training it for a budget with one seed.

A sweep's job list holds, per planned variant, one `measure` job (inference time, memory and energy
per image at each batch size, as the main job measures a point) and one `train` job per seed (top-1
on the data set's evaluation split after a fixed budget, through `train.trainer.fit`). Each job's key
names everything its result depends on, device included, so a changed setting is a new job and
never reads as done. Results are plain JSON objects, one line each in the sweep's log.
"""

import dataclasses
from typing import Optional

import models
from core import failures
from explore import plan as plan_lib
from measure import device as device_lib
from measure import points, results, timing
from train import config as train_config_lib  # plain settings: no TensorFlow, JAX or data

MEASURE, TRAIN = "measure", "train"


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the run step computes per variant."""

    measure: bool = dataclasses.field(default=True, metadata={
        "help": "Time each variant on the device (memory and energy too)."})
    batch_sizes: tuple[int, ...] = dataclasses.field(default=(1, 16), metadata={"help": "Batch sizes to time at."})
    precision: str = dataclasses.field(default="float32", metadata={
        "help": "Precision of the timing.", "choices": timing.PRECISIONS})
    min_time_s: float = dataclasses.field(default=0.2, metadata={
        "help": "Fewest seconds of timed calls per batch size.", "lower_bound": 0})
    power_watts: Optional[float] = dataclasses.field(default=None, metadata={  # modelled power where no meter reads
        "help": "Model energy with this constant power where no meter reads (labelled modelled).", "lower_bound": 0})
    train: bool = dataclasses.field(default=True, metadata={
        "help": "Train each variant for the budget and record its top-1."})
    dataset: str = dataclasses.field(default="synthetic", metadata={
        "help": "synthetic[:settings] or digits (offline), or any data set python -m train reads."})
    data_dir: Optional[str] = dataclasses.field(default=None, metadata={
        "help": "tensorflow-datasets data directory (default: tfds's own)."})
    train_steps: int = dataclasses.field(default=100, metadata={
        "help": "Training budget per variant, in steps.", "lower_bound": 1})
    train_batch_size: int = dataclasses.field(default=32, metadata={"help": "Training batch size.", "lower_bound": 1})
    # AdamW: in a budget of a hundred steps SGD leaves the deeper and the bottleneck variants near
    # chance, so a sweep would rank how fast SGD starts rather than what a design can learn.
    optimizer: str = dataclasses.field(default="adamw", metadata={
        "help": "Optimizer of every training job (cosine schedule).", "choices": train_config_lib.OPTIMIZERS})
    learning_rate: float = dataclasses.field(default=0.003, metadata={
        "help": "Peak learning rate.", "lower_bound": 0})
    weight_decay: float = dataclasses.field(default=0.05, metadata={
        "help": "Weight decay (decoupled for adamw).", "lower_bound": 0})
    seeds: tuple[int, ...] = dataclasses.field(default=(0,), metadata={
        "help": "Training seeds; accuracy is their mean."})
    seed_subset: int = dataclasses.field(default=0, metadata={  # seed noise on a few, the budget on all
        "help": "Train only this many variants, spread over the plan, with every seed of --seeds (the others with "
                "the first); 0: every variant.", "lower_bound": 0})
    curve_points: int = dataclasses.field(default=4, metadata={  # evaluations never change what a job trains
        "help": "Evaluations per training job: its learning curve.", "lower_bound": 1})
    precise_bn_images: int = dataclasses.field(  # evaluation's BatchNorm statistics
        default=train_config_lib.TrainConfig.precise_bn_images, metadata={
            "help": "Training images on which each train job's evaluation re-estimates BatchNorm statistics "
                    "(0: the running averages).", "lower_bound": 0})

    def train_config(self, variant: str, seed: int):
        """The training configuration of one (variant, seed) job."""
        return train_config_lib.TrainConfig(
            model=variant, dataset=self.dataset, data_dir=self.data_dir, batch_size=self.train_batch_size,
            steps=self.train_steps, epochs=None, schedule="cosine", optimizer=self.optimizer,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            seed=seed, log_every=max(self.train_steps, 1), eval_every=max(1, self.train_steps // self.curve_points),
            checkpoint_every=max(self.train_steps, 1), precise_bn_images=self.precise_bn_images)

    def budget(self) -> str:
        """The training budget in words, part of every train job's key."""
        return (f"steps={self.train_steps},batch={self.train_batch_size},{self.optimizer},lr={self.learning_rate:g},"
                f"wd={self.weight_decay:g},precise_bn={self.precise_bn_images}")


def job_list(planned: list[plan_lib.PlannedVariant], settings: RunSettings, device: str) -> list[tuple[str, dict]]:
    """(key, payload) for every job of the sweep, variant by variant."""
    jobs = []
    batches = ",".join(str(b) for b in settings.batch_sizes)
    seeded = set(spread(len(planned), settings.seed_subset or len(planned)))
    for i, p in enumerate(planned):
        if settings.measure:
            jobs.append((f"{MEASURE} {p.variant} {settings.precision} batches={batches} on {device}",
                         {"kind": MEASURE, "variant": p.variant}))
        if settings.train:
            jobs += [(f"{TRAIN} {p.variant} on {settings.dataset} {settings.budget()} seed={seed} on {device}",
                      {"kind": TRAIN, "variant": p.variant, "seed": seed})
                     for seed in (settings.seeds if i in seeded else settings.seeds[:1])]
    return jobs


def spread(count: int, chosen: int) -> list[int]:
    """`chosen` of the indices 0..count-1, evenly spread from the first to the last (all when chosen >= count)."""
    if chosen >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(chosen - 1, 1)) for i in range(chosen)})


def describe(result: dict) -> str:
    """A finished job's result in a few words, for its progress line."""
    if result["kind"] == MEASURE:
        return results.describe_rows(result["rows"])
    if result["status"] != results.OK:
        return result["status"]
    return f"top-1 {100 * result['top1']:.1f} % in {result['train_s']:.1f} s"


class Runner:
    """Computes jobs in one process: the power meter, idle power and peak FLOP/s are read once, lazily."""

    def __init__(self, settings: RunSettings, device, log=print):
        self.settings, self.device, self.log = settings, device, log
        self.device_name = device_lib.device_name(device)
        self.measure_settings = points.Settings(precision=settings.precision, power_watts=settings.power_watts,
                                                timing_options=timing.TimingOptions(min_time_s=settings.min_time_s))
        self._session: Optional[points.Session] = None

    def __call__(self, payload: dict) -> dict:
        """The result of one job."""
        return self._measure(payload["variant"]) if payload["kind"] == MEASURE else self._train(payload)

    def _measure(self, variant: str) -> dict:
        """Every batch size of the variant, as the main job measures its points."""
        if self._session is None:
            self._session = points.Session(self.measure_settings, self.device, self.device_name)
            self.log(f"measure: {self._session.describe()}")
        rows = self._session.points(models.variant(variant), self.settings.batch_sizes)
        return {"kind": MEASURE, "variant": variant, "device": self.device_name,
                "rows": [dataclasses.asdict(row) for row in rows]}

    def _train(self, payload: dict) -> dict:
        """Top-1 after the budget, or the reason training stopped (divergence, out of memory)."""
        from train import trainer  # the train extra: only a sweep that trains imports it
        s = self.settings
        base = {"kind": TRAIN, "variant": payload["variant"], "seed": payload["seed"], "device": self.device_name,
                "dataset": s.dataset, "budget": s.budget()}
        try:
            fitted = trainer.fit(s.train_config(payload["variant"], payload["seed"]), stop_when_asked=False)
        except trainer.Diverged as error:
            return {**base, "status": failures.DIVERGED, "error": str(error)}
        except trainer.OutOfMemory as error:  # this variant does not fit; the others may
            return {**base, "status": results.OUT_OF_MEMORY, "error": str(error)}
        curve = [[record["step"], record["top1_pct"] / 100] for record in fitted["history"] if record["split"] == "eval"]
        return {**base, "status": results.OK, "top1": fitted["eval_top1"], "top5": fitted["eval_top5"], "curve": curve,
                "eval_loss": fitted["eval_loss"], "train_loss": fitted.get("train_loss"),
                "epochs": fitted["epochs"], "train_s": fitted["seconds"]}

    def close(self) -> None:
        """Closes the power meter, if one was opened."""
        if self._session is not None:
            self._session.close()
            self._session = None
