"""The Colab notebook runs headlessly on CPU with tiny settings."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(mnist_dir, tmp_path, monkeypatch):
    for key, value in {"NCA_NB_NUM_DIGITS": "16", "NCA_NB_STEPS": "4", "NCA_NB_VIDEO_DIGITS": "4",
                       "NCA_NB_WORKDIR": str(tmp_path / "smoke"), "NCA_MNIST_DIR": str(mnist_dir)
                       }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = {o.get("output_type") for cell in notebook.cells for o in cell.get("outputs", [])}
    assert "error" not in outputs
    texts = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "trained 12 iterations" in texts
    for model in ("distill_l2_noise", "l2_noise", "ce"):  # the comparison table
        assert f"| {model} |" in texts
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "data" in o]
    assert any("image/gif" in o["data"] for o in images)
    assert any("image/png" in o["data"] for o in images)
    assert (tmp_path / "smoke" / "checkpoints").is_dir()
