"""OpenVINO IR (.xml + .bin) from our verified ONNX: fp32, bf16, or int8 through NNCF.

fp32 and bf16 IRs hold the same fp32 weights: bf16 is how the CPU plugin computes
(``INFERENCE_PRECISION_HINT``), which the IR records for its runner and for deployers. OpenVINO
does not apply a hint stored in the IR, and on AMX / AVX-512-BF16 CPUs it computes every model in
bf16 unless the application pins the hint; so each IR says which hint it was verified with.

int8 is NNCF post-training quantization (``nncf.quantize``: FakeQuantize per channel for weights,
per tensor for activations, with its fast bias correction) on the calibration samples.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError
from exporter.spec import METADATA_KEY
from exporter.stages import StageOutput

INSTALL_HINT = "pip install 'cnnexport[openvino]'"
PRECISIONS = ("fp32", "bf16", "int8")
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the layers NNCF leaves in float stay fp32
# our --method -> NNCF's activation range estimator (NNCF has no entropy calibration)
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}
# --exclude takes ONNX op types as for `quantize`; NNCF ignores OpenVINO op types
OPENVINO_TYPES = {
    "Conv": "Convolution",
    "ConvTranspose": "ConvolutionBackpropData",
    "Gemm": "MatMul",
    "MatMul": "MatMul",
    "Add": "Add",
    "Mul": "Multiply",
    "AveragePool": "AvgPool",
    "GlobalAveragePool": "ReduceMean",
    "MaxPool": "MaxPool",
    "Concat": "Concat",
    "Softmax": "SoftMax",
    "Sigmoid": "Sigmoid",
    "HardSwish": "HSwish",
    "HardSigmoid": "HSigmoid",
    "Relu": "Relu",
}


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable(f"OpenVINO is not installed: {INSTALL_HINT}") from None
    return openvino


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise BackendUnavailable(f"INT8 OpenVINO IRs need NNCF, which is not installed: {INSTALL_HINT}") from None
    return nncf


def cpu_has_bf16() -> bool:
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def deployment_default_hint() -> str:
    """What the CPU plugin computes in when an application does not pin the hint (bf16 on AMX CPUs)."""
    ov = import_openvino()
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def check_options(options) -> None:
    """The stage table's preflight: OpenVINO (and NNCF for int8) importable, the method one NNCF has."""
    import_openvino()
    if options.precision == "int8":
        _import_nncf()
        if options.method not in RANGE_ESTIMATORS:
            raise BadInputError(
                f"--method {options.method}: NNCF has no {options.method} calibration; use {' or '.join(RANGE_ESTIMATORS)}"
            )


def _onnx_metadata(source: Path) -> dict:
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _ignored_scope(nncf, model, exclude: list[str]):
    """NNCF's IgnoredScope from --exclude: ONNX op types mapped to OpenVINO's, other words are node names."""
    if not exclude:
        return None, {}
    types = {op.get_type_name() for op in model.get_ops()}
    names = {op.get_friendly_name() for op in model.get_ops()}
    ignored_types, ignored_names, unknown = [], [], []
    for item in exclude:
        ov_type = OPENVINO_TYPES.get(item, item)
        if ov_type in types:
            ignored_types.append(ov_type)
        elif item in names:
            ignored_names.append(item)
        else:
            unknown.append(item)
    if unknown:
        raise BadInputError(
            f"--exclude {', '.join(unknown)}: no such op type or node in the OpenVINO model "
            f"(op types here: {', '.join(sorted(types))})"
        )
    return nncf.IgnoredScope(names=ignored_names, types=ignored_types), {"types": ignored_types, "names": ignored_names}


def export(
    source: Path,
    staging_dir: Path,
    name: str,
    precision: str = "fp32",
    calibration=None,
    method: str = "minmax",
    exclude: list[str] | tuple[str, ...] = (),
    equalize: bool = False,
) -> StageOutput:
    """Convert ``source`` (ONNX) to an IR ``name`` in ``staging_dir``; int8 calibrates on ``calibration`` (a Source)."""
    ov = import_openvino()
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision must be one of {', '.join(PRECISIONS)}")
    equalization = None
    converted = source
    if equalize and precision == "int8" and calibration is not None:
        converted, equalization = _equalized(source, Path(staging_dir), calibration)
    try:
        model = ov.convert_model(str(converted))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontend raises its own errors
        raise BadInputError(f"OpenVINO cannot convert {Path(source).name} ({str(exc).splitlines()[0][:300]})") from None
    details: dict = {
        "precision": precision,
        "converted_from": f"onnx ({Path(source).name})",
        "inference_precision_hint": HINTS[precision],
        "openvino": ov.get_version(),
    }
    if precision == "int8":
        details.update(_quantize(model, calibration, method, list(exclude), _detect_head(source, model)))
        model = details.pop("_model")
    if equalization is not None:
        details["equalization"] = equalization
    metadata = _onnx_metadata(source)
    if METADATA_KEY in metadata:
        model.set_rt_info(metadata[METADATA_KEY], ["cnnexport", "spec"])
    model.set_rt_info(precision, ["cnnexport", "precision"])
    # recorded for deployers (and read by our runner): the hint this IR was verified with
    model.set_rt_info(HINTS[precision], ["runtime_options", "INFERENCE_PRECISION_HINT"])
    xml = Path(staging_dir) / name
    if xml.suffix != ".xml":
        raise BadInputError(f"-o {name}: an OpenVINO IR is NAME.xml (its weights go to NAME.bin beside it)")
    ov.save_model(model, str(xml), compress_to_fp16=False)  # the default would halve the weights to fp16
    details["ops"] = len(model.get_ops())
    return StageOutput(files=[xml.name, xml.with_suffix(".bin").name], details=details)


def _equalized(source: Path, staging: Path, calibration) -> tuple[Path, dict]:
    """The ONNX cross-layer equalized (exporter/rescue/equalize.py, its fp32 function checked), in a private folder of
    ``staging``: converted instead of ``source``. Its nodes keep their names, so --exclude still reaches them."""
    import shutil

    from exporter.rescue.equalize import equalize_file

    work = staging / ".equalize"
    work.mkdir(exist_ok=True)
    copy = work / "source.onnx"
    shutil.copyfile(source, copy)
    equalized, report = equalize_file(copy, calibration)
    return equalized, report


def _detect_head(source: Path, model) -> list[str]:
    """The OpenVINO ops that decode a detect output (the ONNX nodes exporter/tasks/detect.py keeps in float,
    under the names OpenVINO's ONNX frontend gives them): NNCF leaves them in float, as `quantize` does."""
    import onnx

    from exporter.targets.onnx.tools import float_head_nodes

    names = {op.get_friendly_name() for op in model.get_ops()}
    return [n for n in float_head_nodes(onnx.load(str(source), load_external_data=False)) if n in names]


def _quantize(model, calibration, method: str, exclude: list[str], float_head: list[str] | None = None) -> dict:
    nncf = _import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if calibration is None:
        raise BadInputError("an int8 OpenVINO IR needs calibration data: --calib IMAGE_FOLDER | FILE.npy | digits")
    if method not in RANGE_ESTIMATORS:
        raise BadInputError(f"--method {method}: NNCF has no {method} calibration; use {' or '.join(RANGE_ESTIMATORS)}")
    samples = [s[None] for batch in calibration.batches(32) for s in batch]  # one sample per item, as NNCF counts
    scope, ignored = _ignored_scope(nncf, model, exclude)
    if float_head:  # a detect head's decoding: one scale for 0..640 px boxes and 0..1 scores would lose the boxes
        scope = nncf.IgnoredScope(names=[*(scope.names if scope else []), *float_head], types=scope.types if scope else [])
    estimator = getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[method])
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: noise on the terminal, and stdout is --json's
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            subset_size=len(samples),
            fast_bias_correction=True,
            target_device=nncf.TargetDevice.CPU,
            ignored_scope=scope,
            advanced_parameters=AdvancedQuantizationParameters(activations_range_estimator_params=estimator),
        )
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    if fake_quantize == 0:
        raise BadInputError("NNCF quantized nothing in this model (no FakeQuantize was inserted)")
    return {
        "_model": quantized,
        "method": method,
        "calibration_samples": len(samples),
        "nncf": {
            "version": nncf.__version__,
            "range_estimator": RANGE_ESTIMATORS[method],
            "fast_bias_correction": True,
            "target_device": "CPU",
            "ignored": ignored,
        },
        "fake_quantize_nodes": int(fake_quantize),
        "float_detect_head_nodes": len(float_head or []),
    }


def stored(model) -> tuple[dict, str]:
    """(cnnexport spec, declared precision) an IR carries in its rt_info."""
    spec, precision = {}, "fp32"
    if model.has_rt_info(["cnnexport", "spec"]):
        spec = json.loads(model.get_rt_info(["cnnexport", "spec"]).astype(str))
    if model.has_rt_info(["cnnexport", "precision"]):
        precision = model.get_rt_info(["cnnexport", "precision"]).astype(str)
    return spec, precision


def make(req) -> StageOutput:
    """The openvino row's stage; the details say when an application that does not pin the hint computes differently."""
    opts = req.options
    out = export(
        req.source,
        req.staging,
        req.name,
        opts.precision,
        req.calibration if opts.precision == "int8" else None,
        opts.method,
        list(opts.exclude),
        opts.equalize,
    )
    default = deployment_default_hint()
    out.details["deployment_default_hint"] = default
    if default != out.details["inference_precision_hint"]:
        out.details["deployment_note"] = (
            f"verified with INFERENCE_PRECISION_HINT={out.details['inference_precision_hint']}; an application that "
            f"does not pin it computes this IR in {default} on this CPU"
        )
    return out
