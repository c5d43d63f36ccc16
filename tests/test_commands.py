"""The command bodies as a new user meets them: one-line errors, no library noise, and
the paths a new user tried first (predict, evaluate on external data, python -m kdskin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdskin.cli import main
from tests.conftest import write_isic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from kdskin.models import build_baseline_cnn

    path = tmp_path_factory.mktemp("m") / "baseline.keras"
    build_baseline_cnn(32).save(path)
    return path


def _kdskin(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "kdskin", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


def test_python_m_kdskin_works():
    proc = _kdskin("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("kdskin ")


def test_predict_missing_image_is_one_line_without_loading_tensorflow(model_file, tmp_path):
    # A fresh process, TF_CPP_MIN_LOG_LEVEL unset: exactly one line on stderr, exit 2.
    proc = _kdskin("predict", "--model", str(model_file), str(tmp_path / "missing.jpg"))
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "missing.jpg" in line and "not found" in line
    assert proc.stdout == ""


@pytest.mark.slow
def test_errors_after_tensorflow_loaded_are_still_one_line(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    proc = _kdskin("predict", "--model", str(bad), str(img))
    assert proc.returncode == 2
    assert "broken.keras" in _one_line(proc.stderr)


def test_predict_reports_unreadable_images_and_goes_on(model_file, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert main(["predict", "--model", str(model_file), str(bad), str(good),
                 str(tmp_path / "gone.jpg")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(good)) and "not a medical device" in lines[1]
    assert "REFER" not in lines[0]  # a model outside a run has no decision rules
    assert "bad.jpg" in captured.err and "gone.jpg" in captured.err
    assert "2 of 3 image(s) skipped" in captured.err


def test_predict_json_and_top(model_file, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(img)
    assert main(["predict", "--model", str(model_file), "--json", "--top", "2", str(img)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result) == 1 and len(result[0]["top"]) == 2
    assert sum(result[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    for top in (0, 8):
        assert main(["predict", "--model", str(model_file), "--top", str(top), str(img)]) == 2
        assert f"--top {top}" in _one_line(capsys.readouterr().err)


def _with_stdout_closed(*args: str) -> tuple[int, str]:
    """Run ``python -m kdskin ARGS`` with its stdout a pipe whose reader has gone away before
    the command prints (``kdskin ... | head -5`` once head has its lines): (status, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.Popen([sys.executable, "-m", "kdskin", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=300), err


@pytest.mark.parametrize("kind", [pytest.param("predict --json", marks=pytest.mark.slow),
                                  pytest.param("predict", marks=pytest.mark.slow),
                                  "data inspect"])  # predict: a fresh process loads TensorFlow
def test_a_closed_stdout_ends_the_command_quietly(kind, model_file, ham_dir, tmp_path):
    """A closed stdout: `kdskin predict ... --json | head -5` used to end with 'kdskin: error:
    BrokenPipeError'. Now: exit 141 (128 + SIGPIPE, as Unix tools), nothing on stderr."""
    from kdskin.cli import EXIT_STDOUT_CLOSED

    images = []
    for i in range(40):  # more output than a pipe's buffer: the write itself fails
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((32, 32, 3), 3 * i, np.uint8)).save(images[-1])
    args = (["data", "inspect", str(ham_dir)] if kind == "data inspect" else
            ["predict", "--model", str(model_file), *kind.split()[1:], *map(str, images)])
    code, err = _with_stdout_closed(*args)
    assert (code, err) == (EXIT_STDOUT_CLOSED, "")


def test_predict_takes_no_config(model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--model", str(model_file), "--config", "x.yaml", "a.jpg"])
    assert exc.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_data_synth_without_out_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_image_size_that_cannot_build_the_student_fails_before_training(tmp_path):
    out = tmp_path / "run"
    proc = _kdskin("run", "--set", "data.image_size=24", "--out", str(out))
    assert proc.returncode == 2
    assert "data.image_size" in _one_line(proc.stderr)
    assert not out.exists() and proc.stdout == ""


def _fake_run(tmp_path: Path, model_file: Path, ham: Path) -> Path:
    """A run directory holding ``model_file`` with a split of ``ham`` (what evaluate reads)."""
    from kdskin.config import load_config

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    model = run / "models" / "baseline_cnn.keras"
    model.write_bytes(model_file.read_bytes())
    cfg = load_config(None, [f"data.dir={ham}"])
    cfg.save(run / "config.yaml")
    assert main(["data", "split", "--data", str(ham), "--out", str(run / "split.csv")]) == 0
    return model


def test_evaluate_external_set_is_scored_whole(model_file, ham_dir, tmp_path, capsys):
    model = _fake_run(tmp_path, model_file, ham_dir)
    isic = tmp_path / "isic"
    write_isic(isic)
    capsys.readouterr()
    out = tmp_path / "ext.json"
    assert main(["evaluate", "--model", str(model), "--data", str(isic), "--format", "isic2018",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "all" and result["n_images"] == 21


def test_evaluate_decodes_only_the_split_it_scores(model_file, ham_dir, tmp_path, monkeypatch,
                                                    capsys):
    import pandas as pd

    import kdskin.data.pipeline as pipeline

    model = _fake_run(tmp_path, model_file, ham_dir)
    seen = []
    real = pipeline.decode_split

    def spy(dataset, table, *args, **kwargs):
        seen.append(sorted(set(table["split"])))
        return real(dataset, table, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_split", spy)
    out = tmp_path / "test.json"
    assert main(["evaluate", "--model", str(model), "--data", str(ham_dir), "--json",
                 str(out)]) == 0
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    result = json.loads(out.read_text())
    assert seen == [["test"]]
    assert result["split"] == "test" and result["n_images"] == int((split.split == "test").sum())


def test_evaluate_shifts_scores_every_shift_and_clean_is_the_plain_evaluation(
        model_file, tmp_path, capsys):
    from kdskin.data.shifts import SHIFTS

    isic = tmp_path / "isic"
    write_isic(isic)
    out = tmp_path / "shifts.json"
    assert main(["evaluate", "--model", str(model_file), "--data", str(isic), "--shifts",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    suite = result["shift_suite"]
    assert list(suite["shifts"]) == list(SHIFTS) and suite["n_images"] == 21
    clean = suite["shifts"]["clean"]
    for key in ("balanced_accuracy", "macro_auc", "melanoma_recall"):
        assert clean[key] == pytest.approx(result[key])  # the plain evaluation's figures
        for row in suite["shifts"].values():
            assert row["drop"][key] == pytest.approx(clean[key] - row[key])
    assert all(name in printed for name in SHIFTS)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_file), "--data", str(isic), "--shifts",
                 "blur", "--json", str(out)]) == 0
    assert list(json.loads(out.read_text())["shift_suite"]["shifts"]) == ["clean", "blur"]


def test_evaluate_bad_shift_name_is_one_line(model_file, tmp_path):
    isic = tmp_path / "isic"
    write_isic(isic)
    proc = _kdskin("evaluate", "--model", str(model_file), "--data", str(isic), "--shifts",
                   "sepia")
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "'sepia'" in line and "jpeg_30" in line
