"""The engine's sidecar (``NAME.engine.json``) and what it says about where the engine runs.

A TensorRT engine runs only where it was built (TensorRT version, compute capability); the
sidecar records that, plus the profile, precision and source model, so cnnexport can refuse an
engine with a sentence instead of TensorRT's deserialization assertion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from exporter.errors import BadInputError
from exporter.targets.tensorrt.plan import BuildOptions, BuildPlan
from exporter.targets.tensorrt.version import version_tuple

SIDECAR_FORMAT = "cnnexport-tensorrt-sidecar/1"


FLOAT_NODES_KEY = "cnnexport.float_nodes"


def sidecar_partial(
    plan: BuildPlan,
    options: BuildOptions,
    input_name: str,
    chw: tuple[int, int, int],
    source_onnx: Path,
    source_sha256: str,
    spec: dict,
) -> dict:
    """Everything the sidecar records that does not depend on the machine that builds the engine."""
    from exporter import __version__

    return {
        "format": SIDECAR_FORMAT,
        "cnnexport": __version__,
        "precision": plan.precision,
        "int8_mode": plan.int8_mode,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "cleared_flags": list(plan.cleared_flags),
        "input": input_name,
        "outputs": _onnx_outputs(source_onnx),
        "float_nodes": float_nodes(source_onnx),
        "profile": {
            "min": plan_shape(options.profile.min, chw),
            "opt": plan_shape(options.profile.opt, chw),
            "max": plan_shape(options.profile.max, chw),
        },
        "workspace_bytes": options.workspace,
        "optimization_level": options.optimization_level,
        "hardware_compatibility": options.hardware_compatibility,
        "version_compatible": options.version_compatible,
        "source_onnx": source_onnx.name,
        "source_onnx_sha256": source_sha256,
        "spec": spec,
    }


def _onnx_outputs(path: Path) -> list[str]:
    """The engine's output names, in order: the ONNX graph's (TensorRT keeps them)."""
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def float_nodes(path: Path) -> list[str]:
    """The nodes a Q/DQ model keeps in float on purpose (--exclude, --fallback auto): its cnnexport.float_nodes metadata.

    Built strongly typed, TensorRT runs them in the model's own type (fp32): they carry no Q/DQ, and a
    strongly typed network takes no per-layer precision, so nothing in the build can move them to int8 or fp16.
    """
    import json

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        names = json.loads(props.get(FLOAT_NODES_KEY, "[]"))
    except ValueError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def plan_shape(batch: int, chw: tuple[int, int, int]) -> list[int]:
    return [batch, *chw]


def sidecar_path(engine: Path) -> Path:
    """resnet18.engine -> resnet18.engine.json"""
    return Path(str(engine) + ".json")


def read_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise BadInputError(
            f"{engine} has no sidecar {path.name}: cnnexport needs it to know the engine's TensorRT version, GPU, "
            "batch profile and input spec; rebuild with `cnnexport tensorrt` or the build kit's build.sh"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"sidecar {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"sidecar {path} is not a cnnexport TensorRT sidecar (format {SIDECAR_FORMAT})")
    return data


def compatibility_problems(sidecar: dict, machine: dict) -> list[str]:
    """Why an engine described by ``sidecar`` cannot run on ``machine`` (empty: it can).

    machine: {"tensorrt_version": "10.3.0.26", "gpu": "NVIDIA H100 …", "compute_capability": "9.0"}.
    Engines run only on the TensorRT version that built them, unless built version-compatible
    (then any later runtime); and only on the compute capability that built them, unless built
    with hardware compatibility (ampere_plus: any GPU of compute capability 8.0 or newer).
    """
    problems = []
    built_v, here_v = sidecar.get("tensorrt_version"), machine.get("tensorrt_version")
    if built_v and here_v:
        built, here = version_tuple(built_v), version_tuple(here_v)
        if sidecar.get("version_compatible"):
            if here < built:
                problems.append(
                    f"it was built version-compatible with TensorRT {built_v}, "
                    f"which needs TensorRT {built_v} or newer here, not {here_v}"
                )
        elif built != here:
            problems.append(f"it was built with TensorRT {built_v} and this machine has TensorRT {here_v}")
    built_cc, here_cc = sidecar.get("compute_capability"), machine.get("compute_capability")
    if built_cc and here_cc:
        level = sidecar.get("hardware_compatibility", "none")
        if level == "ampere_plus":
            if _cc(here_cc) < (8, 0):
                problems.append(
                    f"it was built for Ampere and newer GPUs (compute capability >= 8.0) "
                    f"and this GPU ({machine.get('gpu')}) has {here_cc}"
                )
        elif _cc(built_cc) != _cc(here_cc):
            problems.append(
                f"it was built on {sidecar.get('gpu')} (compute capability {built_cc}) and this GPU "
                f"({machine.get('gpu')}) has compute capability {here_cc}"
            )
    return problems


def _cc(text) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:2])


def ensure_compatible(engine: Path, sidecar: dict, machine: dict) -> None:
    problems = compatibility_problems(sidecar, machine)
    if problems:
        raise BadInputError(
            f"engine {Path(engine).name} cannot run here: {'; '.join(problems)}; TensorRT engines are not portable, "
            f"rebuild it on this machine with `cnnexport tensorrt {sidecar.get('source_onnx', 'MODEL.onnx')}`"
        )
