#!/usr/bin/env bash
# What a release pipeline does: build the wheel, install it (not editable, no extras) into a fresh
# venv with the same torch pins, and run `cnnexport demo` from an empty directory (.ci/run, after the
# tests); with CNNEXPORT_FULL=1 (the full tier) also `cnnexport run --recipe release` on the demo's
# checkpoint. Needs .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnnexport-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# pip's output minus its location warnings; with pipefail a failed pip still fails this script
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
FREE_GIB=$(( $(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}') / 1048576 ))
if [ "$FREE_GIB" -lt 6 ]; then
  echo "wheel-smoke: $FREE_GIB GiB free in ${TMPDIR:-/tmp}; the fresh venv needs about 6 GiB" >&2; exit 1
fi

# built from a copy of the tree git knows (tracked and not ignored), so no stale build/ leaks into the wheel
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  { [ -e "$f" ] || [ -L "$f" ]; } && mkdir -p "$WORK/src/$(dirname "$f")" && cp -P -p "$f" "$WORK/src/$f"
done
quiet .venv/bin/python -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/cnnexport-*.whl)
.venv/bin/python - "$WHEEL" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["exporter/recipes/release.yaml", "exporter/recipes/demo.yaml", "exporter/architectures/__init__.py",
          "exporter/targets/tensorrt/tensorrt_support_10.json"]
missing = [n for n in needed if n not in names]
if not any(n.startswith("exporter/loading/fingerprints-timm-") for n in names):
    missing.append("exporter/loading/fingerprints-timm-*.json")
stray = sorted(t for t in {n.split("/")[0] for n in names} if t != "exporter" and not t.endswith(".dist-info"))
if missing or stray:
    sys.exit(f"wheel-smoke: the wheel lacks {missing} or installs top-level {stray}")
print(f"wheel-smoke: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, top level only exporter/")
PY
"${PYTHON:-python3}" -m venv "$WORK/venv"
quiet "$WORK/venv/bin/python" -m pip install --quiet -r scripts/torch-pins.txt
quiet "$WORK/venv/bin/python" -m pip install --quiet "$WHEEL"
mkdir "$WORK/empty"
cd "$WORK/empty"
"$WORK/venv/bin/cnnexport" demo -o demo --quiet
echo "wheel-smoke: cnnexport demo passed from an empty directory"
if [ -z "${CNNEXPORT_FULL:-}" ]; then
  echo "wheel-smoke: the release recipe from the wheel runs with CNNEXPORT_FULL=1 (the full tier)"
  exit 0
fi
CKPT=$(ls demo/*.pt | head -1)
set +e
"$WORK/venv/bin/cnnexport" run --recipe release "$CKPT" --calib digits -o release --json > release.json
RC=$?
set -e
"$WORK/venv/bin/python" - release.json "$RC" <<'PY'
import json, sys
report, rc = json.load(open(sys.argv[1])), int(sys.argv[2])
rows = {name: stage["status"] for name, stage in report["manifest"]["stages"].items()}
print("wheel-smoke: run --recipe release:", ", ".join(f"{k} {v}" for k, v in rows.items()), f"(exit {rc})")
failed = [k for k, v in rows.items() if v == "fail"]
if rc != 0 or failed or not {"onnx", "int8"} <= {k for k, v in rows.items() if v == "pass"}:
    sys.exit(f"wheel-smoke: the release recipe did not pass from the installed wheel (exit {rc}, failed {failed})")
PY
