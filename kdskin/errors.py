"""User-facing errors: one line that names the file or value and says what to do."""

from __future__ import annotations


class KdskinError(Exception):
    """An error caused by the user's input; the CLI prints it on one line and exits 2."""


class ConfigError(KdskinError, ValueError):
    """A bad configuration value (file, ``--set`` override or builder argument); a ValueError."""


class DataError(KdskinError, ValueError):
    """A dataset that cannot be read as promised (missing columns, unknown labels, no images);
    a ValueError."""


class ModelError(KdskinError):
    """A model file that is not a kdskin classifier, or a model that cannot be used as asked."""


class WeightsError(ModelError):
    """A pretrained-weights file that cannot be read or used safely (a pickle that names code,
    a truncated file, a tensor whose shape does not fit its layer), or a missing weights
    package."""
