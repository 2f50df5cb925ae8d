#!/usr/bin/env bash
# Creates .venv (if missing) and installs cnnexport with its test, dev (ruff, mypy, mkdocs), Core ML, timm, transformers,
# OpenVINO (openvino + nncf), ExecuTorch, LiteRT, Ray, consumers (OpenCV) and Ultralytics extras, then creates the isolated environment
# LiteRT's converter runs in (litert-torch's pins conflict with ours; exporter/isolated.py).
# torch/torchvision are pinned to the pair prebuilt for Python 3.11 on our machines;
# any torch>=2.6 works (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# pip's own output minus its location warnings; a failed install stops set-up with pip's exit status
pipq() { .venv/bin/python -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# a full disk shows up later as a half-installed venv; say it first (a fresh .venv takes ~8 GiB)
FREE_GIB=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1048576 ))
if [ ! -x .venv/bin/python ] && [ "$FREE_GIB" -lt 10 ]; then
  echo "setup failed: $FREE_GIB GiB free here; a fresh .venv needs about 10 GiB" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pipq --upgrade pip
pipq -r scripts/torch-pins.txt
pipq -e ".[test,dev,coreml,timm,transformers,openvino,executorch,litert,ray,consumers,signing]"
# Ultralytics (AGPL-3.0, the ultralytics extra) without its dependencies: it asks for opencv-python, which would
# shadow the headless OpenCV above; what it imports is here already, plus these two
pipq --no-deps "ultralytics==8.4.190"
pipq "ultralytics-thop>=2.0" "polars>=1.0" "faster-coco-eval>=1.6"
.venv/bin/python -c "import torch, torchvision, onnx, onnxruntime, onnxsim, typer, timm, transformers, pytorch_lightning, openvino, nncf, cv2, segmentation_models_pytorch, executorch.runtime, ai_edge_litert.interpreter, ai_edge_quantizer, ultralytics.nn.tasks, faster_coco_eval" \
  || { echo "setup failed: a dependency did not install" >&2; exit 1; }
.venv/bin/python -c "from exporter.targets.litert.stage import converter_env; converter_env().ensure(print)" \
  || { echo "setup failed: the isolated LiteRT converter environment (litert-torch) could not be created" >&2; exit 1; }
.venv/bin/python -m ruff --version >/dev/null && .venv/bin/python -m mypy --version >/dev/null && .venv/bin/mkdocs --version >/dev/null \
  || { echo "setup failed: ruff / mypy / mkdocs (the dev extra) did not install" >&2; exit 1; }
