"""Ctrl-C in the middle of an export leaves nothing under a final name and keeps the old artifact."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import build_model, ctrl_c_as_usual


def test_sigint_during_export_leaves_no_partial_file_and_keeps_the_old_artifact(tmp_path):
    import torch

    ckpt = tmp_path / "cifar.pt"
    torch.save(build_model("cifar_resnet18").state_dict(), ckpt)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    previous = out_dir / "cifar.onnx"
    previous.write_bytes(b"previous good artifact")
    cli = Path(sys.executable).with_name("cnnexport")
    proc = subprocess.Popen(
        [str(cli), "onnx", str(ckpt), "-o", str(previous)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_usual,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out_dir.glob(".cnnexport-tmp-*")):
        time.sleep(0.01)
    assert list(out_dir.glob(".cnnexport-tmp-*")), "the export never started staging"
    proc.send_signal(signal.SIGINT)  # at once: on an idle machine export and verification finish within 0.5 s
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert previous.read_bytes() == b"previous good artifact"
    assert sorted(p.name for p in out_dir.iterdir()) == ["cifar.onnx"]


def test_failed_verification_keeps_the_previous_artifact(cli, tmp_path):
    import torch

    (tmp_path / "baked_mod.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(3 * 4 * 4, 3)\n"
        "    def forward(self, x):\n        return self.fc(x.reshape(int(x.shape[0]), -1))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        from baked_mod import Net
    finally:
        sys.path.pop(0)
    torch.save(Net().state_dict(), tmp_path / "n.pt")
    target = tmp_path / "n.onnx"
    target.write_bytes(b"good old bytes")
    r = cli(
        "onnx", tmp_path / "n.pt", "--arch", f"{tmp_path / 'baked_mod.py'}:Net", "--input-shape", "3,4,4", "--exporter", "legacy",
        "-o", target,
    )  # fmt: skip
    assert r.exit_code == 1, r
    assert target.read_bytes() == b"good old bytes"
    assert not (tmp_path / "n.onnx.report.json").exists()
