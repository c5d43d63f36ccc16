import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdskin.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name


@pytest.mark.parametrize("argv", [["run"], ["data", "split"], ["data", "inspect"],
                                  ["data", "synth"], ["evaluate"], ["export"], ["explain"]])
def test_commands_that_read_a_config_have_config_and_set(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out and "--verbose" in out


@pytest.mark.parametrize("argv,has_set", [(["predict"], False), (["report"], False),
                                          (["bench"], True), (["serve"], False),
                                          (["adapt"], True)])
def test_commands_without_a_config_do_not_accept_one(argv, has_set, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" not in out and ("--set" in out) == has_set and "--verbose" in out


def test_bad_input_is_one_line_on_stderr_and_nonzero(tmp_path, capsys):
    code = main(["data", "inspect", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nowhere" in err and "Traceback" not in err


def test_verbose_shows_the_traceback(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "nowhere"), "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_config_error_names_key(tmp_path, capsys, ham_dir):
    code = main(["data", "split", "--data", str(ham_dir), "--out", str(tmp_path / "s.csv"),
                 "--set", "data.sed=3"])
    assert code == 2 and "data.sed" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_split_and_inspect_commands(ham_dir, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["data", "split", "--data", str(ham_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lesions in several splits: 0" in text
    assert main(["data", "inspect", str(ham_dir), "--split", str(out), "--json",
                 str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    assert "images found: 42" in text and "rows without an image: 0" in text
    assert (tmp_path / "s.json").is_file()


@pytest.mark.parametrize("verify", [True, False])
def test_strict_inspect_fails_on_unreadable_images(ham_dir, tmp_path, capsys, verify):
    """With --strict an unreadable image is an error (exit 2), as a missing one is;
    without --strict it is listed and the command succeeds."""
    broken = sorted(ham_dir.rglob("*.jpg"))[3]
    broken.write_bytes(b"not a jpeg at all")
    flags = ["--verify"] if verify else []
    assert main(["data", "inspect", str(ham_dir), *flags]) == 0
    out = capsys.readouterr().out
    assert "unreadable images: 1" in out and broken.name in out
    code = main(["data", "inspect", str(ham_dir), "--strict", *flags, "--json",
                 str(tmp_path / "s.json")])
    captured = capsys.readouterr()
    assert code == 2
    assert "unreadable images: 1" in captured.out  # the summary still lists them
    err = captured.err.strip()
    assert err.count("\n") == 0 and "1 of 42 images cannot be read" in err
    assert broken.name in err and "drop --strict" in err
    assert (tmp_path / "s.json").is_file()


def test_console_script_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "kdskin.cli", "--version"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("kdskin ")


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    test_cmd = next(line for b in blocks for line in b.splitlines() if "pytest" in line)
    assert test_cmd.strip() in ci


def test_parser_builds():
    assert build_parser().prog == "kdskin"
