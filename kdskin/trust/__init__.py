"""Trustworthy outputs, pure NumPy/SciPy/scikit-learn (no TensorFlow): calibration, bootstrap
intervals, a referral operating point, an out-of-scope warning and the model card.

- :mod:`kdskin.trust.calibration`: temperature scaling, ECE, Brier score, NLL, reliability plot.
- :mod:`kdskin.trust.uncertainty`: stratified bootstrap intervals and paired differences.
- :mod:`kdskin.trust.referral`: malignant score and the threshold for a target sensitivity.
- :mod:`kdskin.trust.operating_point`: the melanoma log-odds offset of the top-1 class.
- :mod:`kdskin.trust.ood`: out-of-scope scores (higher = in scope) and their threshold.
- :mod:`kdskin.trust.model_card`: ``MODEL_CARD.md`` from a plain dict; file sha256.
"""

from kdskin.trust.calibration import (
    apply_temperature,
    apply_temperature_to_probs,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_from_probs,
    nll,
    plot_reliability,
)
from kdskin.trust.model_card import (
    ModelCardInfo,
    describe_files,
    package_versions,
    render_model_card,
    sha256_file,
    write_model_card,
)
from kdskin.trust.ood import fit_ood_threshold, is_out_of_scope, ood_metrics, ood_score
from kdskin.trust.referral import (
    MALIGNANT_CLASSES,
    fit_referral_threshold,
    malignant_score,
    refer,
    referral_metrics,
)
from kdskin.trust.uncertainty import bootstrap_ci, paired_bootstrap_diff

__all__ = [
    "MALIGNANT_CLASSES", "ModelCardInfo", "apply_temperature", "apply_temperature_to_probs",
    "bootstrap_ci", "brier_score", "calibration_report", "describe_files",
    "expected_calibration_error", "fit_ood_threshold", "fit_referral_threshold",
    "fit_temperature", "fit_temperature_from_probs", "is_out_of_scope", "malignant_score", "nll",
    "ood_metrics", "ood_score", "package_versions", "paired_bootstrap_diff", "plot_reliability",
    "refer", "referral_metrics", "render_model_card", "sha256_file", "write_model_card",
]
