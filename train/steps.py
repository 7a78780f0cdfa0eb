"""The train state and the pure train and eval steps that `trainer.py` jits over a device mesh."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from models import layers
from train import input_pipeline

AUX_LOSS_WEIGHT = 0.4  # Inception-v3's auxiliary classifier, as in its paper and torchvision


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: the step count, parameters, BatchNorm statistics and optimizer state."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def init_state(module: nn.Module, tx: optax.GradientTransformation, image_shape: tuple, seed: int) -> TrainState:
    """A fresh state: the module's initialisers drawn from `seed`, float32 throughout.

    Initialised in training mode, which builds what only training uses (Inception-v3's auxiliary
    head); Flax leaves BatchNorm's statistics at their initial values during init. The weights
    are drawn with JAX's classic threefry: its hash compiles in a fraction of the partitionable
    one's time (BUILD.md has the figures), and the state is replicated on
    every device, so partitioning its random numbers buys nothing.
    """
    key = jax.random.key(seed)
    with jax.threefry_partitionable(False):
        variables = module.init({"params": key, "dropout": key}, jnp.zeros(image_shape, jnp.float32), train=True)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params))


def _variables(state_params, batch_stats):
    return {"params": state_params, "batch_stats": batch_stats} if batch_stats else {"params": state_params}


def _cast(tree, dtype):
    """Floating leaves of `tree` in `dtype`; the cast's transpose brings gradients back in float32."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _classification(logits, labels, weights):
    """Summed cross-entropy, top-1 and top-5 hits over the weighted examples (float32)."""
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    hits = top5 == labels[:, None]
    return {"loss": jnp.sum(loss * weights), "top1": jnp.sum(hits[:, 0] * weights),
            "top5": jnp.sum(jnp.any(hits, axis=1) * weights), "count": jnp.sum(weights)}


def train_step(state: TrainState, batch: dict, *, module: nn.Module, tx: optax.GradientTransformation,
               dtype, label_smoothing: float, seed: int):
    """One optimizer step on a global batch; a non-finite loss leaves the state as it was.

    Returns the new state and the step's summed metrics (loss, top1, top5, count) plus `finite`,
    so the host can name the step where the loss first went bad without syncing every step.
    """
    images = input_pipeline.normalize(batch["image"]).astype(dtype)
    labels = batch["label"]

    def loss_fn(params):
        outputs, updates = module.apply(_variables(_cast(params, dtype), state.batch_stats), images, train=True,
                                        mutable=["batch_stats"],
                                        rngs={"dropout": jax.random.fold_in(jax.random.key(seed), state.step)})
        logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        loss = jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))
        if aux is not None:
            loss += AUX_LOSS_WEIGHT * jnp.mean(optax.softmax_cross_entropy(aux.astype(jnp.float32), targets))
        return loss, (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    stepped = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=_cast(batch_stats, jnp.float32), opt_state=opt_state)
    # A finite loss can still leave an infinite parameter or variance behind (the next loss is NaN):
    # a step counts as good only if everything it produced is finite. The check is one pass over
    # the parameters, small beside the step.
    finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in
                                                     jax.tree.leaves((stepped.params, stepped.batch_stats))]))
    # Keep the last good state (and its step) when it is not: the host stops the run.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
    metrics = _classification(logits, labels, jnp.ones(labels.shape, jnp.float32))
    metrics["loss"] = loss * labels.shape[0]  # the smoothed (and auxiliary) loss that was minimised
    metrics["finite"] = finite
    return new_state, metrics


def _is_batch_norm(node) -> bool:
    return isinstance(node, dict) and set(node) == {"mean", "var"}


def batch_norm_moments(state: TrainState, sums: tuple, batch: dict, *, module: nn.Module, dtype, seed: int):
    """`sums` (of the batch moments, and of their squares) plus `batch`'s, per BatchNorm in training mode.

    Applied to zeroed statistics, BatchNorm's update is (1 - momentum) times the batch's moments,
    so dividing by that recovers them exactly.
    """
    images = input_pipeline.normalize(batch["image"]).astype(dtype)
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    _, updates = module.apply(_variables(_cast(state.params, dtype), zeros), images, train=True,
                              mutable=["batch_stats"], rngs={"dropout": jax.random.key(seed)})
    moments = jax.tree.map(lambda u: u.astype(jnp.float32) / (1 - layers.BN_MOMENTUM), updates["batch_stats"])
    first, second = sums
    return jax.tree.map(jnp.add, first, moments), jax.tree.map(lambda s, m: s + jnp.square(m), second, moments)


def population_statistics(sums: tuple, batches: int):
    """BatchNorm statistics over every example of `batches` equal batches from their summed moments.

    The mean is the batches' mean; the variance is their mean variance plus the variance of their
    means (the law of total variance), not the mean variance alone, which underestimates it.
    """
    first, second = sums

    def combine(total, squares):
        mean = total["mean"] / batches
        return {"mean": mean, "var": total["var"] / batches + squares["mean"] / batches - jnp.square(mean)}

    return jax.tree.map(combine, first, second, is_leaf=_is_batch_norm)


def eval_step(state: TrainState, batch: dict, *, module: nn.Module, dtype):
    """Summed loss, top-1 and top-5 hits of a padded eval batch (padding masked out)."""
    images = input_pipeline.normalize(batch["image"]).astype(dtype)
    logits = module.apply(_variables(_cast(state.params, dtype), _cast(state.batch_stats, dtype)), images,
                          train=False)
    return _classification(logits, batch["label"], batch["mask"].astype(jnp.float32))
