"""The ground floor every package stands on, free of JAX, Flax and TensorFlow: user errors and the command-line
runner, atomic files and locks, the runtime configuration, failure statuses, precisions, plain values."""
