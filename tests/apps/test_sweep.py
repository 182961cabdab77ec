import json

import pytest

from lowbit.numerics import formats
from lowbit.apps import sweep


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
    cells = [dict(test_acc=90.0, diverged=False, seconds=1.0), dict(test_acc=None, diverged=True, seconds=1.0),
             dict(test_acc=10.0, diverged=False, seconds=1.0)]  # the last one collapsed to chance (10 classes)
    s = sweep.summarise(cells)
    assert s["mean"] == 90.0 and s["diverged"] == 2 and sweep.fmt_acc(s) == "90.00 (2/3 Div.)"
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


def test_paired_gap_uses_matching_seeds():
    base = dict(cells=[dict(seed=0, test_acc=90.0, diverged=False), dict(seed=1, test_acc=94.0, diverged=False)])
    entry = dict(cells=[dict(seed=0, test_acc=91.0, diverged=False), dict(seed=1, test_acc=94.0, diverged=False)])
    mean, se = sweep.paired_gap(entry, base)
    assert mean == 0.5 and abs(se - 0.5) < 1e-12


def test_render_reprints_a_saved_sweep(tmp_path, capsys):
    cells = [dict(format="fp32", options={}, seed=s, test_acc=a, diverged=False, seconds=1.0)
             for s, a in ((0, 95.0), (1, 97.0))]
    saved = dict(grid="methods", data="digits", model="digits_cnn", epochs=2, batch_size=64, lr=0.1, seeds=[0, 1],
                 results=[dict(key="fp32", label="fp32", format="fp32", options={}, cells=cells)])
    path = tmp_path / "s.json"
    path.write_text(json.dumps(saved))
    assert sweep.main(["--render", str(path)]) == 0
    assert "| fp32 | `fp32` | 96.00 ± 1.41 |" in capsys.readouterr().out
