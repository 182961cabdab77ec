import json

import pytest

from lowbit import formats, sweep


def test_table3_cells_map_to_valid_formats():
    for row in sweep.TABLE3_ROWS:
        for mx in sweep.MX_COLUMNS:
            fmt = formats.parse(sweep.table3_format(*row, mx))
            group, mg, ex = row
            assert (fmt.ex, fmt.mx) == (ex, mx)
            assert fmt.group == ("none" if group == "1" else group)
            if mg is not None:
                assert fmt.mg == mg
    assert sweep.table3_format("nc", 1, 2, 1) == "mls:2,1,g=8,1,group=nc"
    assert str(formats.parse(sweep.table3_format("nc", 1, 2, 1))) == "mls:2,1"


def test_parse_rows_and_errors():
    assert sweep.parse_rows("nc,1,2;1,None,0") == (("nc", 1, 2), ("1", None, 0))
    with pytest.raises(ValueError, match="GROUP,MG,EX"):
        sweep.parse_rows("nc,1")
    with pytest.raises(ValueError, match="expected 1, n, c or nc"):
        sweep.parse_rows("x,1,2")
    with pytest.raises(ValueError, match="unknown.*mls21"):
        sweep.pick_methods("fp32,mls99")


def test_summary_marks_divergence():
    cells = [dict(test_acc=90.0, diverged=False, seconds=1.0), dict(test_acc=None, diverged=True, seconds=1.0)]
    s = sweep.summarise(cells)
    assert s["mean"] == 90.0 and s["diverged"] == 1 and sweep.fmt_acc(s).endswith("(1 Div.)")
    assert sweep.fmt_acc(sweep.summarise(cells[1:])) == "Div."
    s = sweep.summarise([dict(test_acc=a, diverged=False, seconds=0.0) for a in (90.0, 92.0)])
    assert sweep.fmt_acc(s) == "91.00 ± 1.41"


def test_table3_markdown_has_paper_shape():
    results = [dict(row=["nc", 1, 2], mx=mx, mean=50.0 + mx, std=0.0, diverged=0, runs=1, seconds=0.0)
               for mx in (4, 3, 2, 1)]
    text = sweep.table3_markdown(results)
    assert "| nc, 1, 2 | 54.00 | 53.00 | 52.00 | 51.00 | 92.37 / 92.65 / 92.05 / 91.97 |" in text


def test_sweep_cli_tiny_run(tmp_path, capsys):
    pytest.importorskip("lowbit.nn")
    out = tmp_path / "cells.json"
    argv = ["--rows", "nc,1,2", "--mx", "1", "--epochs", "1", "--limit-train", "64", "--limit-test", "64",
            "--seeds", "0,1", "--json", str(out)]
    assert sweep.main(argv) == 0
    assert "| nc, 1, 2 |" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    (cell,) = saved["results"]
    assert cell["format"] == "mls:2,1,g=8,1,group=nc" and len(cell["cells"]) == 2
    assert [c["seed"] for c in cell["cells"]] == [0, 1]


def test_methods_cli_tiny_run(capsys):
    pytest.importorskip("lowbit.nn")
    argv = ["--grid", "methods", "--methods", "fp32,pot-wbc", "--epochs", "1", "--limit-train", "64",
            "--limit-test", "64"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "| fp32 | `fp32` |" in out and "`pot:4 (wbc=True)`" in out
