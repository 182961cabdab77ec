import pytest

from lowbit.apps import demo


def test_split_formats_keeps_commas_inside_formats():
    assert demo.split_formats("fp32,mls:2,1") == ["fp32", "mls:2,1"]
    assert demo.split_formats("fp32,mls:2,4,g=8,0,group=n,pot:4") == ["fp32", "mls:2,4,g=8,0,group=n", "pot:4"]
    assert demo.split_formats("fp32;mls:1,1") == ["fp32", "mls:1,1"]


def test_table_reports_gap_to_fp32():
    rows = [dict(format="fp32", backend="torch", test_acc=97.0, train_acc=99.0, seconds=1.0, check_acc=None,
                 agreement=None),
            dict(format="mls:2,1", backend="software", test_acc=96.5, train_acc=98.0, seconds=2.0, check_acc=96.4,
                 agreement=99.7)]
    text = demo.table(rows, "emulation")
    assert "-0.50" in text and "96.40%" in text and "99.70%" in text


def test_demo_runs_and_prints_the_table(capsys):
    pytest.importorskip("lowbit.nn")
    assert demo.main(["--backend", "software", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "mls:2,1" in out and "trained on the software backend" in out
    assert "of fp32" in out.splitlines()[-1]


def test_auto_falls_back_to_software_with_a_reason(monkeypatch):
    def broken(backend):
        raise OSError("g++ not found")

    monkeypatch.setattr(demo, "_smoke_test", broken)
    assert demo.pick_backends("auto") == ("software", None, "emulation backend unavailable (OSError: g++ not found); using software")
    monkeypatch.setattr(demo, "_smoke_test", lambda backend: None)
    assert demo.pick_backends("auto") == ("emulation", None, "")
    assert demo.pick_backends("software", cross_check=True) == ("software", "emulation", "")
