"""An offline image task whose difficulty a user sets: textured shapes among clutter, drawn by NumPy.

Each class is a (shape, texture, count) of the main objects: a disk, square, triangle or ring
(recognised at the object's scale), filled plain, striped, checkered, dotted or with concentric
rings (recognised at a few pixels' scale), one object or two. Telling them apart takes features
at several scales, so width, depth and resolution all matter. Every image also has random
colours, positions, rotations and sizes, smaller plain distractor shapes (`clutter`), a smooth
random background and pixel noise: none of those tells the class.

Example i of a split is a pure function of (seed, split, i), drawn from its own random stream, and
rendered analytically at the resolution asked for (a scene, not an upscaled small image). The
training split has no fixed size: a run reads as many new examples as its budget consumes, so a
network is limited by its capacity and budget, not by memorising a small set. The settings are
written like a variant string: `synthetic:classes=20,noise=0.5` (see `Task`).
"""

import dataclasses
import functools
import typing

import numpy as np

from core.errors import UserError

NAME = "synthetic"
SHAPES = ("disk", "square", "triangle", "ring")
TEXTURES = ("plain", "stripes", "checker", "dots", "rings")
MAX_COUNT = 2
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * MAX_COUNT
SPLITS = {"train": 0, "test": 1}  # each split its own random streams: they never share an example
# An epoch of the endless training split: that many new examples (schedules count epochs; the
# examples of epoch e are those numbered from e x EPOCH_EXAMPLES, never seen before).
EPOCH_EXAMPLES = 50_000


@dataclasses.dataclass(frozen=True)
class Task:
    """The task's settings; each one may be given in the data set string, e.g. synthetic:classes=20."""

    classes: int = 10  # the first ones vary shape, then texture, then count (up to 40)
    noise: float = 0.1  # standard deviation of the pixel noise, in units of the 0..1 intensity range
    clutter: int = 2  # plain distractor shapes, smaller than the main objects
    background: float = 0.3  # amplitude of the smooth random background
    min_scale: float = 0.22  # the main object's radius, as a fraction of the image side
    max_scale: float = 0.36
    rotation: float = 180.0  # objects are rotated by up to this many degrees either way
    frequency: float = 3.0  # texture periods per object radius: its finest detail is radius / (2 x this)
    seed: int = 0  # the task's own seed (not a training run's): another seed is another draw of every split
    test_examples: int = 2000  # the evaluation split's size

    def __post_init__(self):
        checks = ((all(np.isfinite(v) for v in dataclasses.astuple(self)), "every setting must be a finite number"),
                  (2 <= self.classes <= MAX_CLASSES, f"classes must be 2 to {MAX_CLASSES}"),
                  (self.noise >= 0 and self.background >= 0, "noise and background must be >= 0"),
                  (0 <= self.clutter <= 16, "clutter must be 0 to 16"),
                  (0.05 <= self.min_scale <= self.max_scale <= 0.5, "scales must satisfy 0.05 <= min_scale <= "
                                                                    "max_scale <= 0.5"),
                  (0 <= self.rotation <= 180, "rotation must be 0 to 180 degrees"),
                  (0.5 <= self.frequency <= 16, "frequency must be 0.5 to 16"),
                  (self.seed >= 0 and self.test_examples >= 1, "seed must be >= 0 and test_examples >= 1"))
        for ok, message in checks:
            if not ok:
                raise UserError(f"{self}: {message}")

    def __str__(self) -> str:
        """The canonical string: the settings off their defaults, in field order."""
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return f"{NAME}:{','.join(changed)}" if changed else NAME

    def class_of(self, label: int) -> tuple[str, str, int]:
        """The (shape, texture, count) of a label."""
        return (SHAPES[label % len(SHAPES)], TEXTURES[label // len(SHAPES) % len(TEXTURES)],
                1 + label // (len(SHAPES) * len(TEXTURES)))


def is_synthetic(name: str) -> bool:
    """Whether a data set name is this task, with or without settings."""
    return name == NAME or name.startswith(NAME + ":")


def parse(text: str) -> Task:
    """The Task of `synthetic` or `synthetic:knob=value,...`; UserError names the problem and the knobs."""
    name, colon, rest = text.strip().partition(":")
    if name.strip() != NAME:
        raise UserError(f"{text!r} is not the synthetic task; write synthetic or synthetic:classes=20,noise=0.5")
    types = typing.get_type_hints(Task)
    allowed, values = ", ".join(types), {}
    for item in rest.split(",") if colon else ():
        knob, equals, value = (part.strip() for part in item.partition("="))
        if knob not in types or not equals or knob in values:
            problem = (f"{item.strip()!r} is not knob=value" if not equals else
                       f"{knob} is given twice" if knob in values else f"unknown setting {knob!r}")
            raise UserError(f"data set {text.strip()!r}: {problem}; the synthetic task's settings are: {allowed}")
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or (types[knob] is int and not number.is_integer()):
            kind = "an integer" if types[knob] is int else "a number"
            raise UserError(f"data set {text.strip()!r}: {knob} must be {kind}; got {value!r}")
        values[knob] = types[knob](number)
    return Task(**values)


def _grid(resolution: int) -> np.ndarray:
    """Pixel centres in [0, 1): x and y, each [R, R]."""
    centres = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return np.stack(np.meshgrid(centres, centres, indexing="xy"))


def _signed_distance(shape: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximate signed distance to a unit shape in its own coordinates (negative inside)."""
    radius = np.hypot(a, b)
    if shape == "disk":
        return radius - 1.0
    if shape == "square":
        return np.maximum(np.abs(a), np.abs(b)) - 0.8
    if shape == "triangle":
        return np.maximum(-0.5 - b, (np.sqrt(3.0) * np.abs(a) + b - 1.0) / 2.0)
    return np.abs(radius - 0.75) - 0.25  # ring


def _texture(texture: str, a: np.ndarray, b: np.ndarray, frequency: float) -> np.ndarray:
    """The fill's brightness in [0, 1] at local coordinates."""
    if texture == "plain":
        return np.ones_like(a)
    wave = 2 * np.pi * frequency
    if texture == "stripes":
        return (np.sin(wave * a) > 0).astype(np.float32)
    if texture == "checker":
        return (np.sin(wave * a) * np.sin(wave * b) > 0).astype(np.float32)
    if texture == "dots":
        return ((np.mod(frequency * a, 1) - 0.5) ** 2 + (np.mod(frequency * b, 1) - 0.5) ** 2 > 0.09).astype(
            np.float32)
    return (np.sin(wave * np.hypot(a, b)) > 0).astype(np.float32)  # rings


def _draw(canvas: np.ndarray, grid: np.ndarray, rng: np.random.Generator, task: Task, shape: str, texture: str,
          radius: float, centre: np.ndarray) -> None:
    """Paints one object onto the [R, R, 3] canvas, anti-aliased over one pixel."""
    angle = np.deg2rad(rng.uniform(-task.rotation, task.rotation))
    dx, dy = grid[0] - centre[0], grid[1] - centre[1]
    a = (np.cos(angle) * dx + np.sin(angle) * dy) / radius
    b = (-np.sin(angle) * dx + np.cos(angle) * dy) / radius
    pixel = 1.0 / (canvas.shape[0] * radius)  # one pixel in the object's own units
    cover = np.clip(0.5 - _signed_distance(shape, a, b) / pixel, 0.0, 1.0)[..., None]
    colour = rng.uniform(0.35, 1.0, 3).astype(np.float32)
    fill = colour * (0.25 + 0.75 * _texture(texture, a, b, task.frequency))[..., None]
    canvas *= 1 - cover
    canvas += cover * fill


def example(task: Task, split: str, index: int, resolution: int) -> tuple[np.ndarray, int]:
    """Example `index` of `split` as a uint8 [R, R, 3] image and its label: a pure function of its arguments."""
    rng = np.random.default_rng([task.seed, SPLITS[split], index])
    label = int(rng.integers(task.classes))
    shape, texture, count = task.class_of(label)
    grid = _grid(resolution)
    # A smooth background: a few random plane waves, so no pixel's value alone tells anything.
    waves = rng.normal(0.0, 2.0, (3, 2))
    phases = rng.uniform(0, 2 * np.pi, 3)
    field = sum(np.sin(2 * np.pi * (w[0] * grid[0] + w[1] * grid[1]) + p) for w, p in zip(waves, phases)) / 3
    canvas = (0.45 + task.background * field[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.float32)
    radius = rng.uniform(task.min_scale, task.max_scale)
    radius = radius if count == 1 else min(radius / 1.8, 0.2)  # two fit side by side
    for _ in range(task.clutter):
        small = radius * rng.uniform(0.25, 0.45)
        _draw(canvas, grid, rng, task, SHAPES[rng.integers(len(SHAPES))], "plain", small,
              rng.uniform(small, 1 - small, 2))
    centres = _centres(rng, count, radius)
    for centre in centres:
        _draw(canvas, grid, rng, task, shape, texture, radius, centre)
    canvas += rng.normal(0.0, task.noise, canvas.shape).astype(np.float32)
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8), label


def _centres(rng: np.random.Generator, count: int, radius: float) -> list[np.ndarray]:
    """Centres of `count` main objects inside the image, two of them side by side without overlapping."""
    if count == 1:
        return [rng.uniform(radius, 1 - radius, 2)]
    angle = rng.uniform(0, 2 * np.pi)
    offset = 1.05 * radius * np.array([np.cos(angle), np.sin(angle)])
    middle = rng.uniform(radius + np.abs(offset), 1 - radius - np.abs(offset))
    return [middle - offset, middle + offset]


def examples(task: Task, split: str, indices, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices` of `split`: uint8 images [N, R, R, 3] and int32 labels [N]."""
    if split not in SPLITS:
        raise UserError(f"the synthetic task has no split {split!r}; use one of {', '.join(SPLITS)}")
    drawn = [example(task, split, int(i), resolution) for i in indices]
    if not drawn:
        return np.zeros((0, resolution, resolution, 3), np.uint8), np.zeros(0, np.int32)
    images, labels = zip(*drawn)
    return np.stack(images), np.asarray(labels, np.int32)


@functools.lru_cache(maxsize=4)
def test_split(task: Task, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole evaluation split at a resolution, drawn once per process (every evaluation reads it)."""
    images, labels = examples(task, "test", range(task.test_examples), resolution)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
