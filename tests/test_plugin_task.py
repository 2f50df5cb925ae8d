"""A task is one module: a toy task written outside the package, declared through ``cnnexport.tasks``.

The toy task judges (N, D) embeddings by their per-sample cosine alone. Nothing in exporter/
knows it: `--task` must take it, verification must judge the output by its compare (a wrong
model fails with its reason), and the report must show its rule and its agreement column.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import plugin_site
from tests.verdicts import verified

REPO = Path(__file__).resolve().parents[1]

TOY = '''
"""A toy cnnexport task: (N, D) embeddings, judged by their per-sample cosine alone."""
import numpy as np

NAME = "embedding"
CLASS_PER_SAMPLE = False
FLOAT_HEAD = False
MODEL_NOUN = "embedding model"
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}


def recognises(shape):
    return False  # asked for with --task embedding


def check_shape(name, shape):
    return None if len(shape) == 2 else f"output {name!r} has shape {shape}; --task embedding needs (N, D)"


def classes_of(shape):
    return None


def describe_output(output):
    return f"embedding of {output.shape[0]} values"


def rule(tol):
    return 0.9999 if tol.min_cosine >= 0.9999 else tol.min_cosine


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None):
    cos = (ref64 * out64).sum(1) / np.maximum(np.linalg.norm(ref64, axis=1) * np.linalg.norm(out64, axis=1), 1e-300)
    worst = float(cos.min())
    diff = float(np.abs(out64 - ref64).max())
    metrics = {"task": NAME, "max_abs_err": diff, "max_rel_err": diff / (float(np.ptp(ref64)) or 1.0),
               "cosine": worst, "embedding_cosine": worst}
    failed = worst < rule(tol)
    metrics["status"] = "fail" if failed else "pass"
    metrics["reason"] = f"embedding cosine {worst:.6f} < {rule(tol):g}" if failed else ""
    return metrics


def agreement_text(metrics):  # a table row carries its output's task and the shared metrics (cosine, errors)
    return f"emb cos {metrics['cosine']:.4f}" if metrics.get("task") == NAME and metrics.get("cosine") else None


def describe_rule(tol):
    return f"embedding cosine per sample >= {rule(tol):g}"
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict:
    """A folder on PYTHONPATH holding the toy task and the dist-info that declares its entry point."""
    return plugin_site(tmp_path_factory.mktemp("task_plugin_site"), "toy_task", TOY, "[cnnexport.tasks]\nembedding = toy_task\n")


def cnnexport(env: dict, cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_toy_task_judges_an_output_it_was_asked_for(plugin, lenet5_ckpt, tmp_path):
    import torch

    from tests.conftest import build_model

    made = cnnexport(plugin, tmp_path, "onnx", lenet5_ckpt, "--task", "embedding", "-o", tmp_path / "m.onnx", "--json")
    assert made.returncode == 0, made.stderr
    verification = json.loads(made.stdout)["artifacts"][-1]["verification"]
    assert verified(verification) and verification["rule"] == "embedding cosine per sample >= 0.9999"
    (output,) = verification["outputs"].values()
    assert output["task"] == "embedding" and output["cosine"] > 0.9999
    table = cnnexport({**plugin, "COLUMNS": "250"}, tmp_path, "verify", tmp_path / "m.onnx", "--checkpoint", lenet5_ckpt,
                      "--task", "embedding").stdout  # fmt: skip
    assert "emb cos 1.0000" in table and "embedding cosine per sample >= 0.9999" in table  # its column, its rule

    other = tmp_path / "other.pth"  # the same architecture with other weights: the task's compare must fail it
    torch.save({"model_state_dict": build_model("lenet5", num_classes=7, seed=1).state_dict()}, other)
    wrong = cnnexport(plugin, tmp_path, "verify", tmp_path / "m.onnx", "--checkpoint", other, "--task", "embedding", "--json")
    assert wrong.returncode == 1, wrong.stderr
    assert "embedding cosine" in json.loads(wrong.stdout)["artifacts"][-1]["verification"]["reason"]

    unknown = cnnexport(plugin, tmp_path, "onnx", lenet5_ckpt, "--task", "nosuch", "-o", tmp_path / "x.onnx")
    assert unknown.returncode == 2 and "classify, segment, dense, regress, detect, features, embedding" in unknown.stderr
    bare = {**plugin, "PYTHONPATH": str(REPO)}  # without the plug-in the task does not exist
    gone = cnnexport(bare, tmp_path, "onnx", lenet5_ckpt, "--task", "embedding", "-o", tmp_path / "y.onnx")
    assert gone.returncode == 2 and "'embedding' is not one of" in gone.stderr
