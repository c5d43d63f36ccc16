"""``kdskin serve``: the JSON API with FastAPI's test client, on a small run directory.

The run is built in seconds: a small colour classifier (class = base colour), its int8 file,
``decision.json`` and ``MODEL_CARD.md`` laid out as ``kdskin run`` lays them out.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("multipart")

with warnings.catch_warnings():  # Starlette >= 1.x suggests httpx2 over httpx; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from kdskin.constants import CLASSES, NUM_CLASSES  # noqa: E402
from kdskin.data.images import load_image  # noqa: E402
from kdskin.errors import KdskinError  # noqa: E402

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
SIZE = 32
PALETTE = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40],
                    [200, 40, 200], [40, 200, 200], [120, 120, 120]], np.float64)
NOTICE = "Research and education only. Not a medical device; not for diagnosis."


def colour_images(n_per_class: int, size: int = SIZE, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images whose class is their base colour, and labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    noise = rng.normal(0, 30, (len(labels), size, size, 3))
    images = np.clip(PALETTE[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def build_run(root: Path) -> Path:
    """A finished run directory with a trained colour classifier as its final student."""
    import keras

    from kdskin.config import load_config
    from kdskin.decision import DecisionRules
    from kdskin.export.convert import export_tflite
    from kdskin.rundir import RunDir, final_student_name
    from kdskin.trust.model_card import write_model_card

    run = RunDir(root)
    run.models.mkdir(parents=True)
    shutil.copy(TINY, run.config)
    run.metrics.write_text('{"models": {}}')
    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(image)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, {"logits": keras.layers.Dense(NUM_CLASSES, name="logits")(x)},
                        name="colour")
    images, labels = colour_images(20)
    model.compile(keras.optimizers.Adam(1e-2),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    model.fit(images.astype(np.float32), {"logits": labels}, epochs=8, batch_size=35, verbose=0)
    model.save(run.model(final_student_name(load_config(run.config).distill.stages)))
    export_tflite(model, run.tflite, images[::4], kinds=("int8",))
    from kdskin.trust.image_stats import fit_image_gaussian, image_features, image_score
    from kdskin.trust.ood import fit_ood_threshold

    params = fit_image_gaussian(image_features(images))
    DecisionRules(temperature=1.3, temperature_folded=True, referral_threshold=0.5,
                  target_sensitivity=0.9, ood_params=params, ood_pass_rate=0.95,
                  ood_threshold=fit_ood_threshold(image_score(image_features(images), params),
                                                  0.95)).save(run.tflite / "decision.json")
    write_model_card({"model_name": "colour"}, run.tflite / "MODEL_CARD.md")
    return root


def png_bytes(pixels: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def served(run_dir: Path):
    from kdskin.serve.model import ServedModel

    return ServedModel.from_run(run_dir)


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    from kdskin.serve.app import create_app

    app = create_app(served, max_upload_mb=2, max_pixels=2_000_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def samples() -> list[np.ndarray]:
    images, _ = colour_images(1, size=80, seed=3)
    return list(images)


def post(client: TestClient, url: str, data: bytes, name: str = "lesion.png",
         **form: str):
    return client.post(url, files={"file": (name, data, "image/png")}, data=form or None)


# --------------------------------------------------------------------------- predict


@pytest.mark.slow
def test_predict_returns_what_kdskin_predict_json_returns(client, run_dir, samples, tmp_path,
                                                          capsys):
    from kdskin.commands.evaluate import predict_command

    path = tmp_path / "lesion.png"
    path.write_bytes(png_bytes(samples[2]))
    model = run_dir / "tflite" / "model_int8.tflite"
    expected = predict_command(str(model), [str(path)], as_json=True)[0]
    capsys.readouterr()
    r = post(client, "/predict", path.read_bytes())
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["image"] == "lesion.png"
    assert {k: v for k, v in got.items() if k != "image"} == \
        {k: v for k, v in expected.items() if k != "image"}
    assert len(got["top"]) == 3 and got["top"][0]["class"] == CLASSES[2]
    assert got["refer"] is not None and got["out_of_scope"] is not None
    assert got["referral_threshold"] == 0.5


@pytest.mark.slow
def test_predict_top_and_input_image(client, samples):
    r = client.post("/predict?top=7&image=true",
                    files={"file": ("x.jpg", png_bytes(samples[0], fmt="JPEG"), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t["class"] for t in body["top"]] == sorted(
        CLASSES, key=lambda c: -body["probabilities"][c])
    assert abs(sum(body["probabilities"].values()) - 1.0) < 1e-4
    pixels = decode_png(body["input_png"])
    expected = load_image(io.BytesIO(png_bytes(samples[0], fmt="JPEG")), SIZE)
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.slow
def test_info_has_the_model_card_notice_and_methods(client, run_dir):
    info = client.get("/info").json()
    assert info["notice"] == NOTICE
    assert info["methods"] == ["gradcam", "scorecam", "lime"]
    assert info["input_size"] == SIZE
    assert info["max_upload_mb"] == 2
    assert info["decision_rules"]["referral_threshold"] == 0.5
    assert info["cam_model"].endswith("student_multi_fusion.keras")


# --------------------------------------------------------------------------- explain


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "lime"])
def test_explain_returns_overlays_of_the_predicted_class(client, samples, method):
    data = png_bytes(samples[1])
    r = post(client, "/explain", data, method=method)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == method and body["class"] == CLASSES[1]
    overlay, image = decode_png(body["overlay_png"]), decode_png(body["input_png"])
    assert overlay.shape == image.shape == (SIZE, SIZE, 3)
    assert not np.array_equal(overlay, image)  # the heatmap is drawn somewhere
    assert body["explained_model"].endswith(".keras" if method != "lime" else ".tflite")


@pytest.mark.slow
def test_lime_is_seeded_and_explains_a_chosen_class(client, samples):
    data = png_bytes(samples[4])
    first = post(client, "/explain", data, method="lime", **{"class": "nv"}).json()
    second = post(client, "/explain", data, method="lime", **{"class": "nv"}).json()
    assert first["class"] == "nv"
    assert first["overlay_png"] == second["overlay_png"]


@pytest.mark.slow
def test_tflite_outside_a_run_offers_lime_only(run_dir, samples, tmp_path):
    from kdskin.serve.app import create_app
    from kdskin.serve.model import ServedModel

    alone = tmp_path / "alone.tflite"
    shutil.copy(run_dir / "tflite" / "model_int8.tflite", alone)
    served = ServedModel.from_model(alone)
    assert served.methods == ["lime"] and served.rules is None
    with TestClient(create_app(served)) as c:
        r = post(c, "/explain", png_bytes(samples[0]), method="gradcam")
        assert r.status_code == 400
        assert "Keras model" in r.json()["detail"]
        body = post(c, "/predict", png_bytes(samples[0])).json()
        assert body["refer"] is None and body["out_of_scope"] is None
        assert c.get("/info").json()["notice"].startswith("Research and education only")


# --------------------------------------------------------------------------- bad input


def _truncated() -> bytes:
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8),
                     fmt="JPEG")
    return data[: len(data) // 2]


def _bomb() -> bytes:  # 3000 x 3000 = 9 M pixels in a few kB of PNG
    return png_bytes(np.zeros((3000, 3000), np.uint8))


def _float_tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ones((40, 40), np.float32)).save(buf, format="TIFF")
    return buf.getvalue()


BAD_UPLOADS = {
    "text": (b"this is not an image\n" * 10, 400, "not an image"),
    "empty": (b"", 400, "empty"),
    "truncated": (_truncated(), 400, "truncated or corrupt"),
    "html": (b"<html><body>hi</body></html>", 400, "not an image"),
    "too many bytes": (os.urandom(3 * 2**20), 413, "limit"),
    "too many pixels": (_bomb(), 413, "pixels"),
    "float mode": (_float_tiff(), 415, "mode 'F'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("url", ["/predict", "/explain"])
@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_json_message(client, url, case):
    data, status, words = BAD_UPLOADS[case]
    r = post(client, url, data, name="bad.jpg", method="lime")
    assert r.status_code == status, (case, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail
    assert "Traceback" not in r.text and "\n" not in detail


@pytest.mark.slow
def test_a_streamed_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 2**17  # 5 MiB in all, no Content-Length

    r = client.post("/predict", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


@pytest.mark.slow
@pytest.mark.parametrize("request_kwargs, status, words", [
    ({"url": "/predict"}, 422, "file: missing"),
    ({"url": "/explain", "files": {"file": ("a.png", b"x")}}, 422, "method: missing"),
    ({"url": "/explain", "files": {"file": ("a.png", b"x")}, "data": {"method": "shap"}},
     422, "method"),
    ({"url": "/predict?top=9", "files": {"file": ("a.png", b"x")}}, 422, "top"),
])
def test_bad_requests_get_a_4xx_json_message(client, request_kwargs, status, words):
    r = client.post(**request_kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.slow
def test_an_unknown_class_is_refused(client, samples):
    r = post(client, "/explain", png_bytes(samples[0]), method="lime", **{"class": "cat"})
    assert r.status_code == 400
    assert "class 'cat'" in r.json()["detail"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "P", "RGBA", "I;16"])
def test_other_pixel_modes_are_converted(client, samples, mode):
    pixels = samples[5]
    if mode == "I;16":
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    r = post(client, "/predict?image=true", buf.getvalue(), name=f"m.{mode}")
    assert r.status_code == 200, (mode, r.text)
    assert decode_png(r.json()["input_png"]).shape == (SIZE, SIZE, 3)


def test_errors_show_on_the_page_script():
    """The page shows the API's ``detail`` message in its error box."""
    from kdskin.serve.app import STATIC

    script = (STATIC / "app.js").read_text()
    assert "body.detail" in script and 'showError(err.message)' in script


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_concurrent_requests_get_their_own_results(client, samples):
    images = [png_bytes(s) for s in samples]
    expected = [post(client, "/predict", data, name=f"{i}.png").json()
                for i, data in enumerate(images)]
    assert len({e["top"][0]["class"] for e in expected}) == NUM_CLASSES
    results: dict[int, list] = {i: [] for i in range(len(images))}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(4):
                results[i].append(post(client, "/predict", images[i], name=f"{i}.png"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    lime = threading.Thread(target=lambda: results.setdefault(
        -1, [post(client, "/explain", images[6], method="lime")]))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for t in [lime, *threads]:
        t.start()
    for t in [lime, *threads]:
        t.join()
    assert not errors
    for i, responses in results.items():
        if i < 0:
            assert responses[0].status_code == 200 and responses[0].json()["class"] == CLASSES[6]
            continue
        assert [r.status_code for r in responses] == [200] * 4
        assert all(r.json() == expected[i] for r in responses), i


@pytest.mark.slow
def test_nothing_uploaded_stays_on_disk(run_dir, samples, tmp_path, monkeypatch):
    import tempfile

    from kdskin.serve.app import create_app
    from kdskin.serve.model import ServedModel

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    noise = np.random.default_rng(1).integers(0, 255, (700, 700, 3), np.uint8)
    big = png_bytes(noise)  # about 1.5 MB: spooled to a temporary file by the form parser
    assert len(big) > 2**20
    with TestClient(create_app(ServedModel.from_run(run_dir), max_upload_mb=4)) as c:
        for _ in range(3):
            assert post(c, "/predict", big).status_code == 200
        assert post(c, "/predict", _truncated()).status_code == 400
    assert list(spool.iterdir()) == []
    open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [f for f in open_files if f.startswith(str(spool))]


# --------------------------------------------------------------------------- offline pages


EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?(https?:)?//""", re.I)


@pytest.mark.slow
def test_page_and_schema_page_load_nothing_from_the_internet(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert NOTICE.split(".")[0].split(":")[0] in page.text  # the notice is in the HTML itself
    docs = client.get("/docs")
    assert docs.status_code == 200
    for html in (page.text, docs.text):
        assert not EXTERNAL.search(html), EXTERNAL.search(html)
        for ref in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", html):
            assert client.get(ref).status_code == 200, ref
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert "http" not in client.get(asset).text


@pytest.mark.slow
def test_openapi_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/info"} <= set(schema["paths"])
    explain = schema["paths"]["/explain"]["post"]
    assert "multipart/form-data" in explain["requestBody"]["content"]
    assert "kdskin predict --json" in schema["paths"]["/predict"]["post"]["description"]


@pytest.mark.slow
def test_docs_page_without_swagger_assets_lists_the_operations(served, monkeypatch):
    import sys

    from kdskin.serve.app import create_app

    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # import fails
    with TestClient(create_app(served)) as c:
        html = c.get("/docs").text
    assert "POST /predict" in html and "POST /explain" in html
    assert not EXTERNAL.search(html)


# --------------------------------------------------------------------------- command


@pytest.mark.parametrize("kwargs, words", [
    ({}, "exactly one of --run"),
    ({"run": "a", "model": "b"}, "exactly one of --run"),
    ({"run": "/no/such/run"}, "run directory not found"),
    ({"model": "m.tflite", "port": 70000}, "--port 70000"),
    ({"model": "m.tflite", "max_upload_mb": 0}, "--max-upload-mb"),
    ({"model": "m.tflite", "max_pixels": 0}, "--max-pixels"),
])
def test_serve_command_checks_its_arguments_first(kwargs, words):
    from kdskin.commands.serve import serve_command

    with pytest.raises(KdskinError, match=re.escape(words)):
        serve_command(**kwargs)


def test_serve_command_refuses_a_missing_model(tmp_path):
    from kdskin.commands.serve import serve_command

    with pytest.raises(KdskinError, match="model file not found"):
        serve_command(model=str(tmp_path / "none.tflite"))
    with pytest.raises(KdskinError, match="not a finished run"):
        serve_command(run=str(tmp_path))
