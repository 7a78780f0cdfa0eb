"""A per-device latency (and energy) predictor from the cost module's per-layer counts (see model.py)."""

from typing import Optional

import jax

from measure import main_job
from measure.predict.features import Layers
from measure.predict.model import Point, Prediction, Predictor, fit, load, save

__all__ = ["Layers", "Point", "Prediction", "Predictor", "environment_here", "fit", "load", "load_here", "save"]


def environment_here(device: Optional[jax.Device] = None) -> dict:
    """What a predictor must have been fitted with to hold here: device and runtime (main_job.SAME_RUNTIME_KEYS)."""
    environment = main_job.environment(device or jax.devices()[0])
    return {key: str(environment.get(key, "")) for key in main_job.SAME_RUNTIME_KEYS}


def load_here(path: str, precision: Optional[str] = "float32", device: Optional[jax.Device] = None) -> Predictor:
    """The predictor in `path`, refused in one line unless fitted on this device and runtime (and `precision`).

    `precision` None accepts the predictor's own.
    """
    predictor = load(path)
    predictor.check_here(environment_here(device), precision, path)
    return predictor
