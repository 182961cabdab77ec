"""notebooks/train_on_board.ipynb runs end to end (emulation, short) so it cannot rot."""
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_on_board.ipynb"


@pytest.mark.parametrize("device", ["emulation", "simulated"])
def test_train_on_board_notebook_executes(device, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    quick = {"LOWBIT_NB_DEVICE": device, "LOWBIT_NB_EPOCHS": "1", "LOWBIT_NB_TRAIN_SAMPLES": "64",
             "LOWBIT_NB_TEST_SAMPLES": "32", "LOWBIT_NB_WIDTH": "4", "MPLBACKEND": "Agg"}
    for key, value in quick.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "2 steps, final test accuracy" in text
    assert "uJ per step" in text and "in fp32" in text
    if device == "simulated":
        assert "kernel calls on the accelerator: " in text and "through AXI DMA" in text
