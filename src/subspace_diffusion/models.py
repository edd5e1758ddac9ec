"""Built-in models and their initialisations.

Both models split into a ``trunk`` (shared across the network by default) and
a ``head`` (local to each agent), so the default sharing specification is
``{"trunk.*": "shared", "head.*": "local"}``.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .step_rules import find_layers

MODELS = ("cnn", "mlp")


class ReferenceCNN(nn.Sequential):
    """Reference CNN of the multi-task MNIST and CIFAR-10 experiments.

    Trunk: conv(c_in -> 16, 3x3, pad 1), ReLU, max-pool 2, conv(16 -> 32, 3x3,
    pad 1), ReLU, max-pool 2. Head: conv(32 -> 64, 1x1), ReLU, max-pool 2,
    flatten, linear(-> num_outputs). Biases on.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for MNIST, 3 for CIFAR-10).
    image_size : tuple of int
        (height, width) of the input, each divisible by 8.
    num_outputs : int
        Classes of the task.
    """

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_outputs: int
    ) -> None:
        height, width = image_size
        if height % 8 or width % 8:
            raise ConfigError(
                f"The reference CNN pools three times, so the image size must be "
                f"divisible by 8; got {height}x{width}. Resize the images."
            )
        trunk = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        head = nn.Sequential(
            nn.Conv2d(32, 64, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 8) * (width // 8), num_outputs),
        )
        super().__init__()
        self.add_module("trunk", trunk)
        self.add_module("head", head)


class MLP(nn.Sequential):
    """Multilayer perceptron with a ReLU trunk and a linear head.

    Parameters
    ----------
    num_inputs : int
        Input features (images are flattened).
    hidden : sequence of int
        Widths of the trunk's hidden layers.
    num_outputs : int
        Classes of the task.
    bias : bool
        Whether the linear layers have biases. AGD was derived without them.
    """

    def __init__(
        self,
        num_inputs: int,
        hidden: tuple[int, ...] = (256, 256),
        num_outputs: int = 10,
        bias: bool = True,
    ) -> None:
        if not hidden:
            raise ConfigError("The MLP needs at least one hidden layer.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = num_inputs
        for size in hidden:
            layers += [nn.Linear(width, size, bias=bias), nn.ReLU()]
            width = size
        super().__init__()
        self.add_module("trunk", nn.Sequential(*layers))
        self.add_module("head", nn.Linear(width, num_outputs, bias=bias))


def build_model(
    name: str,
    in_channels: int,
    image_size: tuple[int, int],
    num_outputs: int,
    hidden: tuple[int, ...] = (256, 256),
) -> nn.Module:
    """Build a built-in model (``"cnn"`` or ``"mlp"``) for the given input shape."""
    if name == "cnn":
        return ReferenceCNN(in_channels, image_size, num_outputs)
    if name == "mlp":
        num_inputs = in_channels * image_size[0] * image_size[1]
        return MLP(num_inputs, tuple(hidden), num_outputs)
    raise ConfigError(f"Unknown model {name!r}. Choose one of: {', '.join(MODELS)}.")


@torch.no_grad()
def agd_initialise(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise weights as automatic gradient descent expects, in place.

    Each linear weight ``d_l x d_{l-1}`` is a uniformly random semi-orthogonal
    matrix scaled by ``sqrt(d_l / d_{l-1})``. Each (kh, kw) slice of a
    convolution weight ``out x in x kh x kw`` is semi-orthogonal, scaled by
    ``sqrt(out / in) / sqrt(kh kw)``. Biases start at zero.
    """
    names, params = zip(*module.named_parameters())
    layers = find_layers(list(names), [p.shape for p in params])
    for layer in layers:
        weight = params[layer.weight]
        matrices = weight.reshape(layer.fan_out, layer.fan_in, -1)
        for s in range(matrices.shape[2]):
            matrices[:, :, s] = _semi_orthogonal(
                layer.fan_out, layer.fan_in, generator, weight.dtype
            )
        weight.copy_(matrices.reshape(weight.shape) * layer.scale)
        if layer.bias is not None:
            params[layer.bias].zero_()


def _semi_orthogonal(rows, cols, generator, dtype) -> torch.Tensor:
    # QR of a Gaussian matrix, sign-corrected, is uniform on the Stiefel manifold.
    transpose = rows < cols
    n, m = (cols, rows) if transpose else (rows, cols)
    gaussian = torch.randn(n, m, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)
    return (q.T if transpose else q).to(dtype)


def default_initialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-run PyTorch's default ``reset_parameters`` with a seeded generator."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
    finally:
        torch.random.set_rng_state(state)


def count_parameters(module: nn.Module) -> int:
    """Return the number of scalar parameters."""
    return sum(p.numel() for p in module.parameters())
