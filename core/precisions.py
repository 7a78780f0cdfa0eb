"""The precisions the project names: the one table, without JAX (dtypes are looked up by these names)."""

NAMES = ("float32", "bfloat16", "float16")  # what the main job and the explorer time in
TRAINING = ("float32", "bfloat16")  # what training computes in (float32 parameters and optimizer state either way)
