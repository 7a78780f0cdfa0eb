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
import statistics
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


@dataclasses.dataclass(frozen=True)
class _Scene:
    """One example's random draws: its label, background, objects (bottom to top) and pixel noise."""

    label: int
    waves: list  # [3][2] spatial frequencies of the background's plane waves
    phases: list  # [3]
    tint: list  # [3] the background's amplitude per colour channel
    objects: list  # (shape, texture, radius, centre x, centre y, angle, red, green, blue) per object
    noise: bytes  # R x R x 3 bytes, each one of 256 equally likely levels of a unit normal (`_NOISE_LEVELS`)


# Pixel noise is drawn as random bytes looked up in the unit normal's 256 quantiles: a Gaussian to
# within 1/256 of its mass, at a fraction of the cost of drawing normals one by one.
_NOISE_LEVELS = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


def _scene(task: Task, split: str, index: int, resolution: int) -> _Scene:
    """The draws of example `index` of `split`, from that example's own random stream.

    Its numbers come in one call (uniforms, scaled here) and its noise in a second: a few calls per
    example, since the generator's cost per call, not per number, dominates.
    """
    rng = np.random.default_rng([task.seed, SPLITS[split], index])
    draws = iter(rng.random(_DRAWS_PER_SCENE + _DRAWS_PER_OBJECT * (task.clutter + MAX_COUNT)).tolist())

    def uniform(low: float, high: float) -> float:
        """The next draw, scaled to [low, high)."""
        return low + (high - low) * next(draws)

    label = int(uniform(0, task.classes))
    shape, texture, count = task.class_of(label)
    # A smooth background of a few random plane waves, so no pixel's value alone tells anything.
    waves = [[uniform(-3.0, 3.0), uniform(-3.0, 3.0)] for _ in range(3)]
    phases, tint = [uniform(0, 2 * np.pi) for _ in range(3)], [uniform(0.5, 1.0) for _ in range(3)]
    radius = uniform(task.min_scale, task.max_scale)
    radius = radius if count == 1 else min(radius / 1.8, 0.2)  # two fit side by side
    objects = []
    for _ in range(task.clutter):
        small = radius * uniform(0.25, 0.45)
        kind = int(uniform(0, len(SHAPES)))
        objects.append((kind, 0, small, uniform(small, 1 - small), uniform(small, 1 - small), *_pose(uniform, task)))
    if count == 1:
        centres = [(uniform(radius, 1 - radius), uniform(radius, 1 - radius))]
    else:  # side by side, not overlapping, both inside
        angle = uniform(0, 2 * np.pi)
        offset = 1.05 * radius * np.cos(angle), 1.05 * radius * np.sin(angle)
        middle = [uniform(radius + abs(o), 1 - radius - abs(o)) for o in offset]
        centres = [tuple(m - o for m, o in zip(middle, offset)), tuple(m + o for m, o in zip(middle, offset))]
    for x, y in centres:
        objects.append((SHAPES.index(shape), TEXTURES.index(texture), radius, x, y, *_pose(uniform, task)))
    return _Scene(label, waves, phases, tint, objects, rng.bytes(resolution * resolution * 3))


_DRAWS_PER_SCENE = 1 + 6 + 3 + 3 + 1 + 3  # label, waves, phases, tint, radius, the pair's placement
_DRAWS_PER_OBJECT = 8  # size, shape, x, y (or fewer) and its pose


def _pose(uniform, task: Task) -> tuple[float, ...]:
    """An object's rotation in radians and its colour."""
    return (np.deg2rad(uniform(-task.rotation, task.rotation)), uniform(0.35, 1.0), uniform(0.35, 1.0),
            uniform(0.35, 1.0))


def _paint(canvas: np.ndarray, rows: np.ndarray, objects: np.ndarray, frequency: float) -> None:
    """Paints one object onto each canvas `rows` of the [N, R, R, 3] canvas, anti-aliased over one pixel.

    `objects` is [M, 9], a row per canvas painted, as `_Scene.objects` holds it. Every canvas is
    drawn in one set of array operations (grouped by shape and texture), each on the same square
    window around its object: the objects, not the images, set the work.
    """
    side = canvas.shape[1]
    kind, texture, radius, x, y, angle = (objects[:, i] for i in range(6))
    reach = _REACH * radius.max() * side + 1  # in pixels, from the object's centre
    window = min(side, int(np.ceil(2 * reach)) + 1)
    offsets = np.arange(window)
    left = np.clip(np.round(x * side - window / 2), 0, side - window).astype(int)[:, None] + offsets
    top = np.clip(np.round(y * side - window / 2), 0, side - window).astype(int)[:, None] + offsets
    # Flat pixel indices [M, W, W]: one gather of whole pixels, far cheaper than three index arrays.
    where = (rows[:, None, None] * side + top[:, :, None]) * side + left[:, None, :]
    pixels = canvas.reshape(-1, 3)
    patch = pixels[where]
    dx = (left[:, None, :] + np.float32(0.5)) / side - x[:, None, None]
    dy = (top[:, :, None] + np.float32(0.5)) / side - y[:, None, None]
    cos, sin, scale = (v[:, None, None] for v in (np.cos(angle), np.sin(angle), 1 / radius))
    a, b = (cos * dx + sin * dy) * scale, (cos * dy - sin * dx) * scale
    distance, fill = np.empty_like(a), np.empty_like(a)
    for i, name in enumerate(SHAPES):
        which = kind == i
        if which.any():
            distance[which] = _signed_distance(name, a[which], b[which])
    for i, name in enumerate(TEXTURES):
        which = texture == i
        if which.any():
            fill[which] = _texture(name, a[which], b[which], frequency)
    pixel = (1 / (side * radius))[:, None, None]  # one pixel in the object's own units
    cover = np.clip(0.5 - distance / pixel, 0.0, 1.0)[..., None]
    patch += cover * (objects[:, None, None, 6:9] * (0.25 + 0.75 * fill)[..., None] - patch)
    pixels[where] = patch


_REACH = 1.14  # the farthest any shape reaches from its centre, in radii (the square's corners)


def examples(task: Task, split: str, indices, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices` of `split`: uint8 images [N, R, R, 3] and int32 labels [N].

    Each image depends only on its own index (its draws come from its own stream), so a batch of
    them equals the examples drawn one by one; they are rendered together because NumPy's cost per
    call, not per pixel, dominates at the small sides the explorer trains at.
    """
    if split not in SPLITS:
        raise UserError(f"the synthetic task has no split {split!r}; use one of {', '.join(SPLITS)}")
    scenes = [_scene(task, split, int(i), resolution) for i in indices]
    if not scenes:
        return np.zeros((0, resolution, resolution, 3), np.uint8), np.zeros(0, np.int32)
    grid = _grid(resolution)
    waves = np.array([s.waves for s in scenes], np.float32)[..., None, None]  # [N, 3, 2, 1, 1]
    phases = np.array([s.phases for s in scenes], np.float32)[..., None, None]
    field = np.sin(2 * np.pi * (waves[:, :, 0] * grid[0] + waves[:, :, 1] * grid[1]) + phases).mean(axis=1)
    tint = np.array([s.tint for s in scenes], np.float32)[:, None, None, :]
    canvas = 0.45 + np.float32(task.background) * field[..., None] * tint
    # Objects are painted slot by slot (the k-th object of every scene at once), bottom to top.
    for slot in range(max(len(s.objects) for s in scenes)):
        rows = np.array([n for n, s in enumerate(scenes) if slot < len(s.objects)])
        _paint(canvas, rows, np.array([scenes[n].objects[slot] for n in rows], np.float32), task.frequency)
    noise = _NOISE_LEVELS[np.frombuffer(b"".join(s.noise for s in scenes), np.uint8)].reshape(canvas.shape)
    canvas += np.float32(task.noise) * noise
    images = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
    return images, np.array([s.label for s in scenes], np.int32)


def example(task: Task, split: str, index: int, resolution: int) -> tuple[np.ndarray, int]:
    """Example `index` of `split` as a uint8 [R, R, 3] image and its label: a pure function of its arguments."""
    images, labels = examples(task, split, [index], resolution)
    return images[0], int(labels[0])


@functools.lru_cache(maxsize=4)
def test_split(task: Task, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole evaluation split at a resolution, drawn once per process (every evaluation reads it)."""
    images, labels = examples(task, "test", range(task.test_examples), resolution)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
