"""Building blocks shared by the model families: norms, pooling, activations, width rounding."""

import math
import numbers

import flax.linen as nn
import jax.numpy as jnp
from jax import lax
from core.errors import UserError

# He initialisation on fan-out, as fb.resnet.torch and torchvision initialise convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


BN_MOMENTUM = 0.9  # Torch's momentum 0.1: running = 0.9 * running + 0.1 * batch


def batch_norm(train: bool, name: str, epsilon: float = 1e-5) -> nn.BatchNorm:
    """BatchNorm with Torch's defaults (momentum 0.1 in Torch's sense), frozen statistics in eval."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=epsilon, name=name)


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, *, name: str,
         use_bias: bool = False, groups: int = 1, dilation: int = 1, kernel_init=conv_init) -> nn.Conv:
    """A square 2-D convolution with Torch-style symmetric integer padding."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                   feature_group_count=groups, kernel_dilation=(dilation, dilation),
                   kernel_init=kernel_init, name=name)


def round_width(channels: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by `width`, rounded to a multiple of `divisor` (exact at width 1)."""
    if width == 1.0:
        return channels
    scaled = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    if scaled < 0.9 * channels * width:  # never round down by more than 10 %
        scaled += divisor
    return scaled


def pool_output_size(size: int, window: int, stride: int, padding: int = 0, ceil: bool = False) -> int:
    """Output length of a pooling window along one axis, in Torch's floor or Caffe's ceil mode."""
    span = size + 2 * padding - window
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return out


def max_pool(x, window: int, stride: int, padding: int = 0, ceil: bool = False):
    """Max pooling over NHWC with symmetric padding and optional Caffe-style ceil mode."""
    pads = []
    for size in x.shape[1:3]:
        out = pool_output_size(size, window, stride, padding, ceil)
        extra = max(0, (out - 1) * stride + window - size - 2 * padding)
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def avg_pool(x, window: int, stride: int, padding: int = 0):
    """Average pooling over NHWC, padded taps included in the divisor as Torch does by default."""
    return nn.avg_pool(x, (window, window), (stride, stride),
                       padding=((padding, padding), (padding, padding)), count_include_pad=True)


def global_avg_pool(x):
    """Averages NHWC over its spatial axes; at the default resolution it is the papers' 7x7 pool."""
    return jnp.mean(x, axis=(1, 2))


def adaptive_avg_pool(x, size: int):
    """Averages NHWC into a size x size grid (torchvision's bins); the identity when already that size."""
    # The AlexNets and VGG pool their last map to the grid fc6 was defined on (6x6, 7x7), as
    # torchvision does, so fc6's shape and the parameter count are the same at every resolution.
    # Bins overlap when `size` does not divide the side, and repeat pixels when the map is smaller.
    for axis in (1, 2):
        n = x.shape[axis]
        if n == size:
            continue
        bins = [jnp.mean(lax.slice_in_dim(x, i * n // size, -(-(i + 1) * n // size), axis=axis),
                         axis=axis, keepdims=True) for i in range(size)]
        x = jnp.concatenate(bins, axis=axis)
    return x


def check_resolution(x, minimum: int, model: str) -> None:
    """Raises UserError when the input is too small for the network's downsampling."""
    if x.ndim != 4:
        raise UserError(f"{model} takes NHWC images; got an input of shape {x.shape}")
    height, width = x.shape[1:3]
    if min(height, width) < minimum:
        raise UserError(f"{model} needs inputs of at least {minimum}x{minimum} pixels; "
                         f"got {height}x{width} (use a resolution >= {minimum})")


def is_integer(value) -> bool:
    """Whether `value` is an integer (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether `value` is a real number (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_width(model: str, width) -> None:
    """Raises UserError unless the channel multiplier is a positive, finite number."""
    # NaN fails every comparison, so `width <= 0` alone would let it through.
    if not is_real(width) or not math.isfinite(width) or width <= 0:
        raise UserError(f"{model}: width must be a positive finite number; got {width!r}")


def check_num_classes(model: str, num_classes) -> None:
    """Raises UserError unless the classifier's output count is a positive integer."""
    if not is_integer(num_classes) or num_classes < 1:
        raise UserError(f"{model}: num_classes must be a positive integer; got {num_classes!r}")


def check_depths(model: str, depths, expected_len: int) -> None:
    """Raises UserError unless `depths` has one positive integer per stage."""
    if (not isinstance(depths, (tuple, list)) or len(depths) != expected_len
            or not all(is_integer(d) and d > 0 for d in depths)):
        raise UserError(f"{model}: depths must be {expected_len} positive integers, one per stage; "
                        f"got {depths!r}")


def check_flag(model: str, knob: str, value) -> None:
    """Raises UserError unless a switch is a bool (1 and "yes" are not)."""
    if not isinstance(value, bool):
        raise UserError(f"{model}: {knob} must be True or False; got {value!r}")


def check_choice(model: str, knob: str, value, choices) -> None:
    """Raises UserError unless `value` is one of the named choices."""
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{model}: {knob} must be one of {', '.join(choices)}; got {value!r}")


class PReLU(nn.Module):
    """Parametric ReLU with one slope per channel, as Torch's nn.PReLU(nChannels)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x):
        slope = self.param("slope", nn.initializers.constant(self.init_slope), (x.shape[-1],)).astype(x.dtype)
        # Arithmetic, not jnp.where: under the runtime's XLA:CPU preset max, min, multiply and add fuse with
        # the BatchNorm before them into one pass over the activations, while with a select the BatchNorm, the
        # slope's product and the comparison each take a pass of their own before it, over ENet's large early
        # maps, from memory.
        return jnp.maximum(x, 0) + slope * jnp.minimum(x, 0)


class LocalResponseNorm(nn.Module):
    """Caffe's cross-channel LRN: x / (k + alpha/n * sum of squares over n channels)^beta."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    @nn.compact
    def __call__(self, x):
        half = self.size // 2
        # A Python 0.0 init makes JAX emit reduce_window_sum, which has a transpose rule; an array
        # init gives the generic reduce_window, which reverse-mode autodiff cannot differentiate.
        window_sum = lax.reduce_window(jnp.square(x), 0.0, lax.add, (1, 1, 1, self.size), (1, 1, 1, 1),
                                       ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)))
        return x / (self.k + self.alpha / self.size * window_sum) ** self.beta

