"""Energy tables (built-in, user dict / JSON) and the `lowbit energy` command."""
import json

import pytest

from lowbit.energy import OPS, get_table, table_names
from lowbit.apps.energy import main


def test_builtin_tables_cover_every_op_and_cite_sources():
    assert set(table_names()) == {"mls65", "horowitz45"}
    assert get_table("mls65").pj("fp8_mul") == 0.105
    for name in table_names():
        t = get_table(name)
        assert set(t.entries) == set(OPS)
        assert all(e.source for e in t.entries.values())
    mls = get_table("mls65")
    assert (mls.pj("fp32_mul"), mls.pj("fp32_add"), mls.pj("lowbit_mul"), mls.pj("int_add")) == (2.311, 0.512, 0.124, 0.065)
    h = get_table("HOROWITZ45")
    assert (h.pj("fp32_mul"), h.pj("fp32_add"), h.pj("int_add")) == (3.7, 0.9, 0.1)
    assert not mls.entries["xor"].verified and h.entries["fp32_mul"].verified


def test_user_table_from_dict_and_json(tmp_path):
    t = get_table({"name": "mine", "source": "my synthesis", "base": "horowitz45", "pj": {"fp32_mul": 1.5}})
    assert t.pj("fp32_mul") == 1.5 and t.pj("fp32_add") == 0.9 and t.name == "mine"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "file", "pj": {op: 1.0 for op in OPS}}))
    assert get_table(str(path)).pj("xor") == 1.0
    partial = get_table({"pj": {"fp32_mul": 1.0}})
    with pytest.raises(KeyError, match="no entry for op 'fp32_add'"):
        partial.pj("fp32_add")


@pytest.mark.parametrize("bad, match", [
    ({"pj": {"fp64_mul": 1.0}}, "unknown ops"),
    ({"pj": {"fp32_mul": -1}}, ">= 0"),
    ({"name": "x"}, '"pj" dict is missing'),
    ("nosuchtable", "unknown energy table"),
])
def test_bad_tables_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        get_table(bad)


def test_bad_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        get_table(str(path))


def test_cli_json(capsys):
    assert main(["--model", "digits_cnn", "--format", "mls:2,1", "--batch", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "mls:2,1" and out["batch"] == 4 and out["input"] == [1, 8, 8]
    assert out["baseline"] == "fp32" and out["ratio_vs_baseline"] > 1 and out["total_uj"] < out["baseline_total_uj"]
    assert sum(v["uj"] for v in out["layers"].values()) == pytest.approx(out["total_uj"])


def test_cli_table_report(capsys, tmp_path):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"name": "half", "base": "mls65", "pj": {"fp32_mul": 1.0}}))
    assert main(["--model", "resnet20", "--input", "3x16x16", "--format", "pot:4", "--table", str(table)]) == 0
    text = capsys.readouterr().out
    assert "table half" in text and "layer1.0.conv1" in text and "ratio" in text
    assert main(["--list-tables"]) == 0
    assert "Horowitz" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--input", "3xa"], ["--format", "int3"], ["--input", "0x3"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as e:
        main(["--model", "digits_cnn", *argv])
    assert e.value.code == 2


def test_cli_unknown_model_and_table(capsys):
    assert main(["--model", "alexnet"]) == 2
    assert "available" in capsys.readouterr().err
    assert main(["--model", "digits_cnn", "--table", "nope"]) == 2
    assert main(["--model", "digits_cnn", "--batch", "0"]) == 2


def test_cli_user_model_factory(capsys):
    assert main(["--model", "lowbit.models.digits_cnn:DigitsCNN", "--input", "1x8x8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fwd_conv_macs"] > 0
    assert main(["--model", "lowbit.models.digits_cnn:DigitsCNN"]) == 2
    assert "needs --input" in capsys.readouterr().err
    assert main(["--model", "lowbit.models.digits_cnn:DigitsCNN", "--input", "3x5x5"]) == 2
    assert "check --input" in capsys.readouterr().err
    assert main(["--model", "torch.nn:Identity", "--input", "3"]) == 2
    assert "no parameters" in capsys.readouterr().err
    assert main(["--model", "no.such.module:thing", "--input", "3"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_cli_fp8_baseline(capsys):
    assert main(["--model", "digits_cnn", "--baseline", "fp8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"] == "fp8" and 1 < out["ratio_vs_baseline"]
    assert main(["--model", "digits_cnn", "--baseline", "fp8"]) == 0
    assert "fp8_mul" in capsys.readouterr().out


def test_cli_names_ops_as_the_docs_do(capsys):
    assert main(["--model", "resnet20", "--format", "mls:2,1"]) == 0
    parts = capsys.readouterr().out.split("\npart ", 1)[1]
    ops = {line[13:27].strip() for line in parts.splitlines()[1:] if line.strip() and not line.startswith("total")}
    assert {"fp32_add", "fp32_mul", "lowbit_mul", "int_add", "group_scale", "tree_add"} <= ops
    assert ops <= set(OPS) | {"lowbit_mul"}, ops - set(OPS)


def test_cli_runs_a_token_model(capsys):
    """The character Transformer takes token ids, not a float image."""
    assert main(["--model", "char_transformer", "--format", "pot:4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"] == [64] and report["ratio_vs_baseline"] > 1
