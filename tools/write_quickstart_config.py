"""Regenerate configs/quickstart.yaml from the defaults in kdskin/config.py (one source of truth).

    python tools/write_quickstart_config.py
"""

from pathlib import Path

from kdskin.config import Config
from kdskin.io import atomic_write_text

HEADER = """\
# quickstart: the default configuration (identical to the defaults in kdskin/config.py; regenerate
# with `python tools/write_quickstart_config.py`). Runs the whole pipeline on the built-in generated
# dataset in minutes on 2 CPU cores (measured: docs/CONFIGS.md, "The quickstart's time"). Small
# models, few epochs, first-look sizes of the benchmark and int8 calibration.
"""

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    atomic_write_text(out, HEADER + Config().to_yaml())
    print(f"wrote {out}")
