"""notebooks/train_on_board.ipynb runs end to end (short) on emulation, the simulated board and a
remote (simulated) board, so it cannot rot; its saved outputs are from a simulated-board run."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_on_board.ipynb"


def _outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.fixture
def device_name(request):
    if request.param != "remote":
        yield request.param
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lowbit.board.remote_server", "--simulated", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    yield f"remote:127.0.0.1:{port}"
    server.terminate()
    server.wait()


@pytest.mark.parametrize("device_name", ["emulation", "simulated", "remote"], indirect=True)
def test_train_on_board_notebook_executes(device_name, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    quick = {"LOWBIT_NB_DEVICE": device_name, "LOWBIT_NB_EPOCHS": "1", "LOWBIT_NB_TRAIN_SAMPLES": "64",
             "LOWBIT_NB_TEST_SAMPLES": "32", "LOWBIT_NB_WIDTH": "4", "MPLBACKEND": "Agg"}
    for key, value in quick.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _outputs_text(nb)
    assert "2 steps, final test accuracy" in text
    assert "uJ per step (energy model, arithmetic only; not measured)" in text and "in fp32" in text
    assert "no power sensor found on this machine" in text or "J per step (measured)" in text
    figures = [o for c in nb.cells if "plot_power(" in c.source for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in figures), "plot_power showed no figure"
    if device_name != "emulation":
        assert "kernel calls on the accelerator: " in text and "through AXI DMA" in text
    if device_name.startswith("remote:"):
        assert f"remote at {device_name[len('remote:'):]}" in text


def test_the_saved_notebook_carries_a_simulated_board_run():
    nb = json.loads(NOTEBOOK.read_text())
    text = "\n".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []))
    assert "backend: lowbit GEMM IP on zcu104 through AXI DMA (pynq)" in text
    assert "final test accuracy" in text and "kernel calls on the accelerator" in text
    assert "QConv2d" in text and "ran (GEMM calls)" in text, "the notebook does not show lowbit.summary's table"
    plots = [o for c in nb["cells"] if "plot_power(" in "".join(c["source"]) for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in plots)
