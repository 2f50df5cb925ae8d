"""The TensorRT build kit: what `cnnexport tensorrt --emit-script DIR` writes where TensorRT is absent.

A kit is everything the target machine needs to build and check the engine itself:

  MODEL.onnx (+ the Q/DQ or fp16 model the build uses)   byte-identical to the verified files
  MODEL.int8-trt.calib                                    int8 only: the TensorRT calibration cache
  build.sh                                                the exact trtexec command, then the sidecar
  ENGINE.build.json                                       the sidecar minus what only the build machine knows
  verify.sh                                               the `cnnexport verify` command line
  checksums.sha256                                        build.sh refuses models that changed
  README.md                                               what to run on the target machine and why

The kit is written into a staging folder and moved into place whole: an interrupted run leaves
no half kit, and an existing kit in DIR is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import BadInputError, OutputError
from exporter.fsutil import Staging, sha256_of
from exporter.targets.tensorrt.plan import BuildOptions, BuildPlan, trtexec_command

KIT_MARKER = ".cnnexport-trt-kit"

# Fills in the sidecar from trtexec's log (TensorRT version, selected GPU, compute capability),
# falling back to nvidia-smi; kept in build.sh so the kit needs nothing but python3 and trtexec.
_SIDECAR_PY = r"""
import hashlib, json, re, subprocess, sys
engine, log_path = sys.argv[1], sys.argv[2]
log = open(log_path, errors="replace").read()
side = json.load(open(engine + ".build.json"))
version = None
m = re.search(r"TensorRT version:\s*([0-9][0-9.]*)", log)
if m:
    version = m.group(1)
else:
    m = re.search(r"\[TensorRT v(\d+)\]", log)
    if m:
        code = int(m.group(1))
        version = (f"{code // 10000}.{code // 100 % 100}.{code % 100}" if code >= 100000
                   else f"{code // 1000}.{code // 100 % 10}.{code % 100}")
gpu = re.search(r"Selected Device:\s*(.+)", log)
cc = re.search(r"Compute Capability:\s*([0-9.]+)", log)
gpu, cc = (gpu.group(1).strip() if gpu else None), (cc.group(1) if cc else None)
if gpu is None or cc is None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, check=True).stdout.strip().split(", ")
        gpu, cc = gpu or out[0], cc or out[1]
    except Exception:
        pass
side.update(tensorrt_version=version, gpu=gpu, compute_capability=cc, built_by="trtexec (cnnexport build kit)",
            engine_sha256=hashlib.sha256(open(engine, "rb").read()).hexdigest())
json.dump(side, open(engine + ".json", "w"), indent=2)
missing = [k for k in ("tensorrt_version", "gpu", "compute_capability") if not side[k]]
if missing:
    print("warning: could not read " + ", ".join(missing) + " from the trtexec log; the sidecar leaves them empty",
          file=sys.stderr)
print(f"sidecar {engine}.json: TensorRT {version}, {gpu}, compute capability {cc}")
"""


@dataclass
class KitRequest:
    kit_dir: Path
    engine_name: str
    reference_onnx: Path  # the fp32 ONNX (verified against PyTorch): the verify reference
    build_onnx: Path  # the model trtexec builds (the reference, the Q/DQ model, or the fp16 model)
    plan: BuildPlan
    options: BuildOptions
    input_name: str
    chw: tuple[int, int, int]
    sidecar: dict  # sidecar.sidecar_partial(...)
    calib: Path | None = None
    timing_cache: str = "timing.cache"
    checkpoint: Path | None = None
    labels: tuple[str, ...] = ()  # --consumer-files: ENGINE.labels.txt in the kit (Triton's label_filename)


def _companions(onnx_path: Path) -> list[Path]:
    """An ONNX model and its external-data file, when it has one."""
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [onnx_path] + ([data] if data.is_file() else [])


def verify_command(req: KitRequest) -> str:
    batches = f"{req.options.profile.min},{req.options.profile.max}"
    return (
        f"cnnexport verify {shlex.quote(req.engine_name)} --reference {shlex.quote(req.reference_onnx.name)} "
        f"--precision {req.plan.precision} --batch-sizes {batches}"
    )


def build_script(req: KitRequest, command: list[str]) -> str:
    lines = " \\\n    ".join(shlex.quote(part) if i else '"$TRTEXEC"' for i, part in enumerate(command))
    major = req.plan.major
    return f"""#!/usr/bin/env bash
# Build {req.engine_name} on this machine (the one that will run it): TensorRT engines are tied
# to the GPU and the TensorRT version that build them. Written by cnnexport for TensorRT {major}.x.
# Input: {req.input_name}; outputs, each verified: {", ".join(req.sidecar.get("outputs") or [])}
#   bash build.sh                      # trtexec from PATH
#   TRTEXEC=/opt/tensorrt/bin/trtexec bash build.sh
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-trtexec}}"
if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
    echo "error: trtexec not found: install TensorRT {major}.x on this NVIDIA machine or set TRTEXEC=/path/to/trtexec" >&2
    exit 3
fi
sha256sum --check --quiet checksums.sha256   # the models are the ones cnnexport verified

{lines} \\
    2>&1 | tee build.log

python3 - {shlex.quote(req.engine_name)} build.log <<'PY'
{_SIDECAR_PY.strip()}
PY
echo "built {req.engine_name}; check it against the ONNX model with:"
echo "    {verify_command(req)}"
"""


def readme(req: KitRequest, command: list[str], files: list[str]) -> str:
    from exporter import __version__

    flag_help = {
        "--onnx": "the model to build",
        "--saveEngine": "where the engine goes",
        "--minShapes": "smallest batch of the optimization profile",
        "--optShapes": "the batch TensorRT tunes for",
        "--maxShapes": "largest batch of the optimization profile",
        "--stronglyTyped": "strongly typed network: the model's own types (and Q/DQ nodes) decide precision",
        "--fp16": "allow fp16 kernels (TensorRT 10.x weak typing)",
        "--int8": "allow int8 kernels (TensorRT 10.x implicit quantization)",
        "--calib": "the calibration cache with each tensor's int8 scale",
        "--noTF32": "keep fp32 math exact (no TF32 rounding)",
        "--memPoolSize": "workspace limit",
        "--builderOptimizationLevel": "builder optimization level (0-5; TensorRT's default is 3)",
        "--hardwareCompatibilityLevel": "engine runs on other GPUs of this class",
        "--versionCompatible": "engine runs on later TensorRT versions",
        "--timingCacheFile": "reuse/save kernel timings: later builds are faster",
        "--skipInference": "build only; verification is the next step",
    }
    rows = []
    for part in command[1:]:
        key = part.split("=", 1)[0]
        rows.append(f"| `{part}` | {flag_help.get(key, '')} |")
    notes = "\n".join(f"* {n}" for n in req.plan.notes) or "* none"
    checkpoint = (
        f"\nWith the PyTorch checkpoint on this machine, compare with PyTorch itself:\n\n"
        f"    cnnexport verify {req.engine_name} --checkpoint {req.checkpoint.name} --precision {req.plan.precision} "
        f"--batch-sizes {req.options.profile.min},{req.options.profile.max}\n"
        if req.checkpoint
        else ""
    )
    return f"""# TensorRT build kit: {req.engine_name}

Written by cnnexport {__version__} on a machine without TensorRT. Build the engine **here**, on the
machine that will run it: an engine only runs on the TensorRT version and the GPU (compute
capability) that built it.

## Needs

* an NVIDIA GPU and TensorRT {req.plan.major}.x with `trtexec` on `PATH` (or `TRTEXEC=/path/to/trtexec`)
* `python3` and `sha256sum` (build.sh checks the models and writes the engine's sidecar)
* to verify: `pip install cnnexport tensorrt` and torch with CUDA

## Build

    bash build.sh

It checks `checksums.sha256`, then runs:

```
{" ".join(shlex.quote(p) for p in command)}
```

| flag | why |
|---|---|
{chr(10).join(rows)}

The engine reads `{req.input_name}` and returns {", ".join(f"`{o}`" for o in req.sidecar.get("outputs") or [])}; `verify`
compares every one of them. It writes `{req.engine_name}.json`, the sidecar: TensorRT version, GPU, compute capability, batch
profile, precision and the source model's sha256. `cnnexport` refuses to run the engine where
these do not match.

## Verify

    {verify_command(req)}

runs the engine and the ONNX model `{req.reference_onnx.name}` (verified against PyTorch when the
kit was made) at batch {req.options.profile.min} and {req.options.profile.max}, the ends of the profile, with the
{req.plan.precision} tolerances. Add `--images DIR` to judge on real images.
{checkpoint}
## Decisions for TensorRT {req.plan.major}.x ({req.plan.precision})

{notes}
{_float_section(req)}
## Files

{chr(10).join(f"* `{f}`" for f in files)}
"""


def _float_section(req: KitRequest) -> str:
    """The README's list of nodes the Q/DQ model keeps in float (--exclude, --fallback auto), and why they stay fp32."""
    nodes = req.sidecar.get("float_nodes") or []
    if not nodes:
        return ""
    how = (
        "They carry no Q/DQ nodes and the network is strongly typed, so TensorRT runs them in the model's own "
        "type, fp32: a strongly typed network takes no per-layer precision and no `--fp16`/`--int8`, so nothing "
        "in this build can move them to int8 or fp16."
        if req.plan.strongly_typed
        else "This build is weakly typed: check the engine's layer precisions with "
        "`trtexec --exportLayerInfo=layers.json --profilingVerbosity=detailed`."
    )
    listed = "\n".join(f"* `{n}`" for n in nodes)
    return f"""
## Kept in float ({len(nodes)} nodes of `{req.build_onnx.name}`)

{how} The sidecar lists them as `float_nodes`.

{listed}
"""


def _check_target(kit_dir: Path) -> None:
    if kit_dir.exists() and not kit_dir.is_dir():
        raise OutputError(f"--emit-script {kit_dir} is a file; give a folder")
    if kit_dir.is_dir() and any(kit_dir.iterdir()) and not (kit_dir / KIT_MARKER).exists():
        raise OutputError(
            f"--emit-script folder {kit_dir} is not empty and holds no earlier build kit; choose an empty or new folder"
        )


def write_kit(req: KitRequest) -> list[Path]:
    """Write the kit into ``req.kit_dir`` atomically; returns the kit's files (final paths)."""
    kit_dir = Path(req.kit_dir)
    _check_target(kit_dir)
    command = trtexec_command(
        req.build_onnx.name,
        req.engine_name,
        req.input_name,
        req.chw,
        req.plan,
        req.options,
        req.calib.name if req.calib is not None else None,
        req.timing_cache,
    )
    with Staging(kit_dir.parent) as staging:
        new = staging.path / "kit"
        new.mkdir()
        sources = _companions(req.reference_onnx)
        if req.build_onnx != req.reference_onnx:
            sources += _companions(req.build_onnx)
        if req.plan.calibrator or req.plan.precision == "int8":
            if req.calib is None:
                raise BadInputError("an int8 kit needs the calibration cache")
            sources.append(req.calib)
        for src in sources:
            shutil.copyfile(src, new / src.name)
        (new / f"{req.engine_name}.build.json").write_text(json.dumps(req.sidecar, indent=2) + "\n")
        if req.labels:
            (new / f"{req.engine_name}.labels.txt").write_text("".join(f"{label}\n" for label in req.labels))
        script = new / "build.sh"
        script.write_text(build_script(req, command))
        script.chmod(0o755)
        verify = new / "verify.sh"
        verify.write_text(f'#!/usr/bin/env bash\nset -euo pipefail\ncd "$(dirname "$0")"\n{verify_command(req)} "$@"\n')
        verify.chmod(0o755)
        (new / "checksums.sha256").write_text("".join(f"{sha256_of(new / s.name)}  {s.name}\n" for s in sources))
        (new / KIT_MARKER).write_text("written by cnnexport tensorrt --emit-script\n")
        files = sorted(p.name for p in new.iterdir() if p.name != KIT_MARKER) + ["README.md"]
        (new / "README.md").write_text(readme(req, command, sorted(files)))
        _swap_in(new, kit_dir, staging.path / "old")
    return [kit_dir / name for name in sorted(files)]


def _swap_in(new: Path, target: Path, backup: Path) -> None:
    """Move the finished kit to ``target``; an earlier kit there is replaced only after this succeeds."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(new, target)
        return
    os.replace(target, backup)  # an earlier kit (checked by _check_target); the staging folder deletes it
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
