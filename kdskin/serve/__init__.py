"""``kdskin serve``: a local web page and JSON API to try a trained model on one image.

- :class:`~kdskin.serve.model.ServedModel`: predictions from the deployed ``.tflite`` with its
  decision rules; Grad-CAM / Score-CAM from the run's Keras student, LIME from the deployed file.
- :func:`~kdskin.serve.upload.decode_upload`: checks and decodes an upload in memory.
- :func:`~kdskin.serve.app.create_app`: the FastAPI app (page, ``/predict``, ``/explain``,
  ``/docs``), needing no internet.

FastAPI, uvicorn and python-multipart come with the ``serve`` extra
(``pip install -e ".[serve]"``); importing this package does not import them.
"""

from __future__ import annotations

#: What to install for ``kdskin serve``.
INSTALL_HINT = 'pip install -e ".[serve]" (fastapi, uvicorn, python-multipart, fastapi-offline)'
