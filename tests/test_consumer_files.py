"""`--consumer-files` (issue 44, item 4): Triton-style labels and a JSON spec beside an ONNX model or a TensorRT
engine / kit, for servers that read neither ONNX metadata nor our reports; the stored spec is JSON, never repr."""

from __future__ import annotations

import json

CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _labels(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("".join(f"{c}\n" for c in CLASSES))
    return path


def test_onnx_writes_triton_labels_and_the_spec_beside_the_model(cli, simple_cnn_ckpt, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    r = cli("onnx", simple_cnn_ckpt, "--labels", _labels(tmp_path), "--consumer-files", "-o", out, "--json")
    assert r.exit_code == 0, r
    assert (tmp_path / "m.onnx.labels.txt").read_text().splitlines() == list(CLASSES)  # line i = class i
    document = json.loads((tmp_path / "m.onnx.json").read_text())
    assert document["format"] == "cnnexport.spec/1" and document["spec"]["labels"] == list(CLASSES)
    assert document["spec"]["num_classes"] == 10 and [document["spec"][k] for k in ("channels", "height", "width")] == [3, 32, 32]
    art = r.json()["artifacts"][-1]
    assert art["details"]["consumer_files"] == ["m.onnx.labels.txt", "m.onnx.json"]
    assert {str(tmp_path / n) for n in ("m.onnx", "m.onnx.labels.txt", "m.onnx.json")} <= set(art["files"])
    stored = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(stored["cnnexport.spec"])["labels"] == list(CLASSES)  # the metadata is JSON too

    plain = cli("onnx", simple_cnn_ckpt, "--consumer-files", "-o", tmp_path / "n.onnx", "--json")
    assert plain.exit_code == 0, plain
    assert (tmp_path / "n.onnx.json").is_file() and not (tmp_path / "n.onnx.labels.txt").exists()
    assert "no class names" in plain.json()["artifacts"][-1]["details"]["consumer_files"][-1]
    assert not (tmp_path / "o.onnx.json").exists() and cli("onnx", simple_cnn_ckpt, "-o", tmp_path / "o.onnx").exit_code == 0
    assert not (tmp_path / "o.onnx.json").exists()  # only on request


def test_a_tensorrt_kit_carries_the_labels_and_its_sidecar_stays_json(cli, simple_cnn_ckpt, tmp_path):
    named = tmp_path / "named.onnx"  # an ONNX whose stored spec has the class names
    assert cli("onnx", simple_cnn_ckpt, "--labels", _labels(tmp_path), "-o", named).exit_code == 0
    kit = tmp_path / "kit"
    r = cli("tensorrt", named, "--consumer-files", "--emit-script", kit)
    assert r.exit_code == 0, r
    assert (kit / "named.engine.labels.txt").read_text().splitlines() == list(CLASSES)
    sidecar = json.loads((kit / "named.engine.build.json").read_text())
    assert sidecar["spec"]["labels"] == list(CLASSES)
    assert "named.engine.labels.txt" in (kit / "README.md").read_text()  # listed among the kit's files
