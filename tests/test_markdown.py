"""The one Markdown-table helper (kdskin.markdown)."""

import pytest

from kdskin.markdown import cell, table


def test_table_formats_cells_and_checks_row_lengths():
    text = table(["model", "AUC"], [["a|b", 0.91234], ["c", None]], digits=2, align="lr")
    assert text.splitlines() == ["| model | AUC |", "|---|---:|", "| a\\|b | 0.91 |",
                                 "| c | n/a |"]
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        table(["a", "b"], [[1]])
    assert cell(float("nan")) == "nan" and cell(3) == "3"
