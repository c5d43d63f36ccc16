"""The ``kdskin serve`` web app: a page at ``/``, a JSON API, its schema page, all offline.

Routes::

    GET  /               the page (static/index.html, app.js, style.css; no CDN)
    GET  /info           the served model: input size, methods, decision rules, notice
    POST /predict        multipart ``file``: what ``kdskin predict --json`` gives for it
    POST /explain        multipart ``file`` + ``method`` (gradcam | scorecam | lime)
    GET  /docs           the API's schema page (Swagger UI from a local copy)
    GET  /openapi.json   the OpenAPI schema

Every refusal is JSON ``{"detail": "one line"}`` with a 4xx status; an unexpected failure is a
500 with one line, never a traceback. Uploads are read into memory (a body above the limit is
refused while it arrives); Starlette may spool a large part to an anonymous temporary file,
which is closed (and so removed) when the request ends. Nothing uploaded is written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kdskin import __version__
from kdskin.errors import KdskinError
from kdskin.serve.model import ServedModel
from kdskin.serve.upload import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    UploadError,
    decode_upload,
    max_upload_bytes,
)

STATIC = Path(__file__).parent / "static"
#: Room for the multipart headers and form fields around the file itself.
MULTIPART_SLACK = 64 * 1024
DESCRIPTION = ("Try a kdskin skin-lesion classifier on one image: calibrated probabilities, "
               "the referral decision, the out-of-scope warning and Grad-CAM / Score-CAM / LIME "
               "overlays. Research and education only: not a medical device, not for "
               "diagnosis.")


class BodyLimit:
    """ASGI middleware: a request body above ``limit`` bytes gets a 413 JSON answer, from its
    ``Content-Length`` before anything is read, or as soon as the streamed body passes it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps({"detail": f"the upload ({size}) is more than the limit of "
                                     f"{self.limit / 2**20:.1f} MiB; send a smaller image "
                                     f"(or start kdskin serve with a larger --max-upload-mb)"}
                          ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send, f"{int(length) / 2**20:.1f} MiB")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"more than {self.limit / 2**20:.1f} MiB")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                  "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "missing; send it as a multipart form field" if "body" in err.get(
                "loc", ()) else "missing"
        parts.append(f"{where or 'request'}: {msg}")
    return "; ".join(parts) or "invalid request"


def _docs_page(app: FastAPI) -> HTMLResponse:
    """Swagger UI from the local copy shipped by ``fastapi-offline``; without it, a plain
    list of the schema's operations (both work with no internet)."""
    try:
        import fastapi_offline
    except ImportError:
        from html import escape

        rows = [f"<li><code>{escape(method.upper())} {escape(path)}</code>: "
                f"{escape(op.get('summary', ''))}<br>{escape(op.get('description', ''))}</li>"
                for path, ops in app.openapi()["paths"].items() for method, op in ops.items()]
        return HTMLResponse(f"<!doctype html><title>{escape(app.title)} API</title>"
                            f"<h1>{escape(app.title)} API</h1><p><a href='/openapi.json'>"
                            f"openapi.json</a></p><ul>{''.join(rows)}</ul>")
    from fastapi.openapi.docs import get_swagger_ui_html

    del fastapi_offline
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css",
                               swagger_favicon_url="/docs-assets/favicon.png")


def _read_upload(file: UploadFile, served: ServedModel, max_bytes: int, max_pixels: int
                 ) -> tuple[Any, str]:
    """-> (image (S, S, 3) uint8, name); the upload's spooled file is closed (removed)."""
    name = Path(file.filename or "upload").name or "upload"
    try:
        data = file.file.read(max_bytes + 1)
    finally:
        file.file.close()
    return decode_upload(data, name, served.input_size, max_bytes, max_pixels), name


def create_app(served: ServedModel, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    """The web app for one :class:`ServedModel`; ``max_upload_mb`` limits each upload,
    ``max_pixels`` its width x height."""
    max_bytes = max_upload_bytes(max_upload_mb)
    if max_pixels < 1:
        raise KdskinError(f"--max-pixels {max_pixels}: must be a positive number of pixels")
    app = FastAPI(title="kdskin serve", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_SLACK)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    try:
        import fastapi_offline

        assets = Path(fastapi_offline.__file__).parent / "static"
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    except ImportError:
        pass

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(KdskinError)
    async def _kdskin_error(_: Request, exc: KdskinError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return JSONResponse({"detail": f"internal error: {exc.__class__.__name__}: {first}"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return _docs_page(app)

    @app.get("/info", summary="The served model")
    def info() -> dict[str, Any]:
        """Model file, input size, classes, explanation methods, decision rules (calibration
        temperature, referral and out-of-scope thresholds), the upload limits and the model
        card's intended-use notice."""
        return {**served.info(), "max_upload_mb": max_bytes / 2**20, "max_pixels": max_pixels}

    @app.post("/predict", summary="Classify one image")
    def predict(file: Annotated[UploadFile, File(description="an image file (JPEG, PNG, ...)")],
                top: Annotated[int, Query(ge=1, le=7, description="classes in `top`")] = 3,
                image: Annotated[bool, Query(description="also return `input_png`: the image "
                                             "at the model's input size (base64 PNG)")] = False
                ) -> dict[str, Any]:
        """What `kdskin predict --json` prints for one image: `image` (the file name), `top`
        (classes with calibrated probabilities), `probabilities` (all seven), `calibrated`,
        `refer`, `malignant_probability`, `referral_threshold`, `out_of_scope` and
        `in_scope_score` (null where the model has no decision rules).

        Errors (JSON `detail`): 400 not an image / truncated, 413 too large (bytes or pixels),
        415 unsupported pixel mode, 422 missing file."""
        pixels, name = _read_upload(file, served, max_bytes, max_pixels)
        entry = served.predict(pixels, name, top)
        if image:
            from kdskin.serve.model import png_base64

            entry["input_png"] = png_base64(pixels)
        return entry

    @app.post("/explain", summary="Explain one image's prediction")
    def explain(file: Annotated[UploadFile, File(description="an image file")],
                method: Annotated[Literal["gradcam", "scorecam", "lime"],
                                  Form(description="gradcam and scorecam explain the run's Keras "
                                       "student; lime explains the deployed file")],
                class_name: Annotated[str | None, Form(alias="class", description="class to "
                                      "explain (default: the predicted one)")] = None
                ) -> dict[str, Any]:
        """An overlay at the model's input size: `input_png` and `overlay_png` (base64 PNG),
        with `method`, `class` (explained), `probability` (its calibrated probability),
        `explained_model` and `seconds`. LIME is seeded (same image, same map)."""
        pixels, name = _read_upload(file, served, max_bytes, max_pixels)
        return served.explain(pixels, name, method, class_name or None)

    return app
