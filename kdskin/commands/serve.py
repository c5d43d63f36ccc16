"""``kdskin serve``: the web page and JSON API of :mod:`kdskin.serve` on a local port."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kdskin.errors import KdskinError
from kdskin.serve import INSTALL_HINT
from kdskin.serve.upload import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, max_upload_bytes


def _check_installed() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise KdskinError(f"kdskin serve needs {', '.join(missing)}: {INSTALL_HINT}")


def serve_command(run: str | None = None, model: str | None = None, host: str = "127.0.0.1",
                  port: int = 8000, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                  max_pixels: int = DEFAULT_MAX_PIXELS, warm_up: bool = True) -> None:
    """Serve ``run``'s int8 ``.tflite`` (or the ``model`` file) at ``http://host:port/`` until
    interrupted. Checks the arguments and the installed packages before loading anything."""
    if (run is None) == (model is None):
        raise KdskinError("pass exactly one of --run RUN_DIR or --model FILE")
    if not 1 <= port <= 65535:
        raise KdskinError(f"--port {port}: must be between 1 and 65535")
    max_upload_bytes(max_upload_mb)
    if max_pixels < 1:
        raise KdskinError(f"--max-pixels {max_pixels}: must be a positive number of pixels")
    if run is not None and not Path(run).is_dir():
        raise KdskinError(f"{run}: run directory not found; pass a folder written by kdskin run")
    _check_installed()
    import uvicorn

    from kdskin.serve.app import create_app
    from kdskin.serve.model import ServedModel

    start = time.perf_counter()
    served = ServedModel.from_run(run) if run is not None else ServedModel.from_model(model)
    if warm_up:
        from kdskin.export.quiet import native_stderr

        print("kdskin serve: loading the models ...", file=sys.stderr)
        with native_stderr():  # LiteRT's "INFO: Created ... delegate" line
            served.warm_up()
    app = create_app(served, max_upload_mb=max_upload_mb, max_pixels=max_pixels)
    shown = f"[{host}]" if ":" in host else host
    print(f"kdskin serve: {served.model_path} ready in {time.perf_counter() - start:.1f} s; "
          f"open http://{shown}:{port}/ (API schema: /docs). Ctrl+C stops.", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"kdskin serve: warning: listening on {host}, reachable from other machines; "
              f"there is no authentication", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
