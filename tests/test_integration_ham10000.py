"""Integration tests on the real HAM10000 subset in ../shared/data/ham10000 (skipped if absent)."""

import pytest

from kdskin.cli import main
from kdskin.data.datasets import read_ham10000
from kdskin.data.split import lesions_in_several_splits, read_split

pytestmark = pytest.mark.integration


def test_inspect_counts_the_shared_subset(shared_ham, capsys):
    assert main(["data", "inspect", str(shared_ham)]) == 0
    out = capsys.readouterr().out
    assert "images found: 5,984" in out
    assert "rows without an image: 4,031" in out


def test_split_of_shared_subset_is_lesion_grouped(shared_ham, tmp_path):
    out = tmp_path / "split.csv"
    assert main(["data", "split", "--data", str(shared_ham), "--out", str(out)]) == 0
    split = read_split(out)
    assert len(split) == 5984
    assert lesions_in_several_splits(split) == []
    ds = read_ham10000(shared_ham)
    assert set(split["image_id"]) == set(ds.table["image_id"])
    for name in ("train", "val", "test"):
        assert split.loc[split["split"] == name, "dx"].nunique() == 7
