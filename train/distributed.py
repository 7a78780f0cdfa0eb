"""Devices and hosts: `jax.distributed` start-up, the data-parallel mesh, global batches and bounded dispatch."""

import collections
import os
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from core.errors import UserError

DATA_AXIS = "data"
# Programs a loop may dispatch ahead of the device: two keep it busy while the host prepares the next batch.
IN_FLIGHT = 2


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Joins the hosts of a multi-host run: from the arguments, else from SLURM; alone otherwise.

    Must run before anything starts a JAX backend.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in explicit):
        if None in explicit:
            raise UserError("a multi-host run needs all of --coordinator_address, --num_processes and --process_id")
        if process_id >= num_processes:
            raise UserError(f"--process_id={process_id} must be below --num_processes={num_processes}")
        _cpu_collectives()
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        _cpu_collectives()
        jax.distributed.initialize()  # JAX reads the coordinator and the ranks from SLURM's variables


def shutdown() -> None:
    """Leaves a multi-host run (nothing when alone): every host waits here for the others, then the service stops.

    Left to interpreter exit, each host would leave in whatever order its objects are destroyed, and
    one whose coordination service (process 0's) had already gone could wait out the service's
    shutdown timeout, minutes, after every step was done.
    """
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def _cpu_collectives() -> None:
    """CPU devices of several processes talk through gloo (GPUs use NCCL whatever this says)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def data_mesh() -> Mesh:
    """A one-axis mesh over every device of every host: the batch is split along it."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Parameters and optimizer state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Batches: split along their first axis over the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def per_host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This host's share of the global batch, which every device must split evenly (UserError)."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise UserError(f"batch_size {global_batch_size} does not split over {devices} devices; "
                        f"use a multiple of {devices}")
    return global_batch_size // jax.process_count()


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """One global array per field from this host's NumPy batch (its rows of the global batch)."""
    return {name: jax.make_array_from_process_local_data(sharding, value) for name, value in local_batch.items()}


def zeros_like(tree):
    """Zeros shaped, typed and sharded as `tree`'s fully replicated global arrays, made from host memory.

    No program runs to make them (jnp.zeros_like on a global array launches one on every host).
    """
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(
        leaf.sharding, np.zeros(leaf.shape, leaf.dtype)), tree)


class InFlight:
    """Bounds the programs a loop has dispatched but not yet seen finish: beyond `depth`, waits for the oldest.

    JAX dispatches asynchronously, so a loop that fetches nothing (an evaluation split, the steps
    between two logs) queues every program at once. More than a couple in flight buys no speed,
    holds more batches in device memory, and with several CPU devices in one process (JAX's
    jax_num_cpu_devices) XLA:CPU aborts: an all-reduce of a queued step waits in its rendezvous for
    a device's part that never runs, until XLA's collective timeout ends the process
    (tests/test_train.py reproduces it).
    """

    def __init__(self, depth: int = IN_FLIGHT):
        self._depth = depth
        self._outputs = collections.deque()

    def __call__(self, outputs):
        """Returns `outputs` (never donated later) once the outputs given `depth` calls before are ready."""
        self._outputs.append(outputs)
        if len(self._outputs) > self._depth:
            jax.block_until_ready(self._outputs.popleft())
        return outputs
