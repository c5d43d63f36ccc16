"""The maintained tools in tools/ still make what the repository holds from today's files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_scaling_doc_writes_the_committed_scaling_md(tmp_path, monkeypatch, capsys):
    """docs/SCALING.md is the tool's output from docs/scaling/*.json: edited by hand, it would
    drift from the command that claims to write it."""
    tool = _tool("bench_scaling")
    out = tmp_path / "SCALING.md"
    monkeypatch.setattr(tool, "DOC", out)
    tool.cmd_doc(None)
    assert out.read_text() == (ROOT / "docs" / "SCALING.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["bench_scaling", "bench_memory", "melanoma_offset",
                                  "prior_offset", "resize_agreement", "write_quickstart_config"])
def test_every_tool_imports_and_says_how_to_run_it(name):
    tool = _tool(name)
    assert tool.__doc__ and f"tools/{name}.py" in tool.__doc__
