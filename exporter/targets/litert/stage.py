"""Make a LiteRT model: torch.export at batch 1, litert-torch (isolated env), then ai-edge-quantizer.

1. The model is exported here (``torch.export``, batch 1: what an Android app feeds) and saved
   as a .pt2 file: the isolated environment has torch but neither cnnexport nor the user's code.
2. convert_worker.py converts it to a float .tflite in that environment (NHWC edges on request).
   litert-torch 0.10 cannot convert a symbolic batch through flatten/view (measured: LeNet-5
   fails), so the model is batch 1 and the interpreter resizes it where the graph allows.
3. fp16 and int8 are ai-edge-quantizer recipes applied here: fp16 weights (float casting), or
   static int8 weights and activations calibrated on the calibration split (int8 input/output,
   with the scale and zero point in the details).
4. The spec, precision and layout are written into the model's metadata table for the runner.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError, ExportError
from exporter.stages import StageOutput, StageRequest, decomposed_attention, example_batch
from exporter.targets import first_line
from exporter.targets.litert import CONVERTER, INSTALL_HINT

WORKER = Path(__file__).with_name("convert_worker.py")
CONVERT_TIMEOUT_S = 3600
METADATA = {"spec": "cnnexport.spec", "precision": "cnnexport.precision", "layout": "cnnexport.layout"}


def converter_env():
    from exporter.isolated import IsolatedEnv

    return IsolatedEnv("litert", CONVERTER)


def import_runtime():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise BackendUnavailable(f"the LiteRT runtime (ai-edge-litert) is not installed: {INSTALL_HINT}") from None
    return interpreter


def _import_quantizer():
    try:
        import ai_edge_quantizer
    except ImportError:
        raise BackendUnavailable(f"fp16 and int8 LiteRT models need ai-edge-quantizer: {INSTALL_HINT}") from None
    return ai_edge_quantizer


def check_options(options) -> None:
    """The row's preflight: the runtime (and the quantizer for fp16 / int8) importable here."""
    import_runtime()
    if options.equalize and options.precision != "int8":
        raise BadInputError("--equalize prepares a model for int8: add --precision int8")
    if options.precision != "fp32":
        _import_quantizer()


def _progress(message: str) -> None:
    print(f"• {message}", file=sys.stderr)  # a stage has no Ui; creating the environment takes a minute once


def convert(module, spec, target: Path, layout: str) -> dict:
    """The float .tflite of ``module`` at batch 1, converted in the isolated litert-torch environment."""
    import torch

    env = converter_env().ensure(_progress)
    with tempfile.TemporaryDirectory(prefix="cnnexport-litert-") as scratch:
        program = Path(scratch) / "model.pt2"
        try:
            with decomposed_attention(), torch.no_grad():
                exported = torch.export.export(module.eval(), (example_batch(spec, 1),), strict=False)
        except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; the first line names the problem
            raise ExportError(f"torch.export refused the model ({first_line(exc)})") from None
        torch.export.save(exported, str(program))
        done = env.run_script(WORKER, str(program), str(target), layout, "0", timeout=CONVERT_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    details = json.loads(lines[-1]) if lines else {}
    details["isolated_env"] = env.describe()
    return details


def quantize(float_model: Path, target: Path, precision: str, calibration, layout: str, float_scopes=()) -> dict:
    """ai-edge-quantizer: fp16 weights, or static int8 weights and activations calibrated on ``calibration``;
    ``float_scopes``: the op scopes (exporter/targets/litert/rescue.py) left unquantized."""
    _import_quantizer()
    from ai_edge_quantizer import quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    tool = quantizer.Quantizer(str(float_model))
    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(
            regex=".*",
            operation_name=recipe.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
        tool.load_quantization_recipe(manager.get_quantization_recipe())
        with _quiet():
            result = tool.quantize()
        details: dict = {"quantizer": "ai-edge-quantizer (fp16 weights, float compute)"}
    else:
        if calibration is None:
            raise BadInputError("an int8 LiteRT model needs calibration data: --calib IMAGE_FOLDER | FILE.npy | digits")
        static = _with_float_ops(recipe.static_wi8_ai8(), list(float_scopes))
        tool.load_quantization_recipe(static)
        with _quiet():
            signature = import_runtime().Interpreter(model_path=str(float_model)).get_signature_list()
        key = next(iter(signature))
        input_name = signature[key]["inputs"][0]
        samples = [s[None] for batch in calibration.batches(32) for s in batch]
        if layout == "nhwc":
            samples = [s.transpose(0, 2, 3, 1).copy() for s in samples]
        with _quiet():
            result = tool.quantize(_min_max_ranges(float_model, static, {key: [{input_name: s} for s in samples]}))
        details = {
            "quantizer": "ai-edge-quantizer static_wi8_ai8 (int8 per-channel weights, int8 activations)",
            "ranges": "min-max over every calibration sample",
            "calibration_samples": len(samples),
            **({"float_ops": len(float_scopes)} if float_scopes else {}),
        }
    target.write_bytes(bytes(result.quantized_model))
    return details


def _with_float_ops(static_recipe: list, scopes: list[str]) -> list:
    """The recipe with each op whose scope (its output tensor names, ';'-joined) is in ``scopes`` left unquantized."""
    import re

    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if not scopes:
        return static_recipe
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static_recipe)
    for scope in scopes:
        manager.add_quantization_config(
            regex="^" + re.escape(scope) + "$", operation_name="*", algorithm_key=AlgorithmName.NO_QUANTIZE
        )
    return manager.get_quantization_recipe()


def _min_max_ranges(float_model: Path, static_recipe, data: dict) -> dict:
    """Each tensor's range as the min and max over all samples.

    ai-edge-quantizer's default is a moving average of per-sample ranges, which clips what a few
    samples reach: on LeNet-5 / digits it cut the logits to [-4.7, 7.9] of [-8.2, 9.5] (held-out
    cosine 0.971, fails the int8 rule); the true min-max gives 0.9994, as onnxruntime's does.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static_recipe)
    ranges = calibrator.Calibrator(float_model.read_bytes(), num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    ranges.calibrate(data, manager)
    return ranges.get_model_qsvs()


def write_metadata(path: Path, entries: dict[str, str]) -> None:
    """Add (or replace) named entries of the flatbuffer's metadata table, as LiteRT's own tools do."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    # read_model_from_bytearray inlines buffers stored past the flatbuffer by offset (ai-edge-quantizer writes
    # them so for all but tiny models); a plain object conversion drops them ("out of range offset" on load)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() not in entries]
    for name, value in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def read_metadata(path: Path) -> dict[str, str]:
    """The cnnexport entries of a .tflite's metadata table ({} for a model made elsewhere)."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(Path(path).read_bytes())
    try:
        model = schema.Model.GetRootAs(data, 0)
        found = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            name = entry.Name().decode()
            if name in METADATA.values():
                found[name] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
        return found
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer raises struct / index errors
        raise BadInputError(f"{path} is not a LiteRT model cnnexport can read ({first_line(exc)})") from None


def export(loaded, staging: Path, name: str, options, calibration=None) -> StageOutput:
    """Write the LiteRT model ``name`` into ``staging``."""
    check_options(options)
    if not name.endswith(".tflite"):
        raise BadInputError(f"-o {name}: a LiteRT model is NAME.tflite")
    target = Path(staging) / name
    float_model = target if options.precision == "fp32" else Path(staging) / f".float-{name}"
    details: dict = {"precision": options.precision, "layout": options.layout, "batch": 1}
    module = loaded.module.eval()
    if options.precision == "int8" and options.equalize and calibration is not None:
        from exporter.rescue.torch_equalize import equalized_module

        module, details["equalization"] = equalized_module(module, example_batch(loaded.spec, 1), calibration)
    details.update(convert(module, loaded.spec, float_model, options.layout))
    if options.precision != "fp32":
        float_scopes: list[str] = []
        if options.precision == "int8" and options.exclude:
            from exporter.targets.litert.scopes import float_scopes_of

            interpreter = import_runtime().Interpreter(model_path=str(float_model))
            float_scopes = float_scopes_of(interpreter, module, options.exclude)
        try:
            details.update(quantize(float_model, target, options.precision, calibration, options.layout, float_scopes))
        except (BackendUnavailable, BadInputError):
            raise
        except Exception as exc:  # noqa: BLE001 - the quantizer raises ValueError / KeyError / RuntimeError on what it cannot take
            # measured: wide_resnet50_2 int8 -> ValueError "Failed to get quantization parameters ..."
            raise ExportError(f"ai-edge-quantizer could not make the {options.precision} model ({first_line(exc)})") from None
        details["float_bytes"] = float_model.stat().st_size
        float_model.unlink()
    write_metadata(
        target,
        {METADATA["spec"]: loaded.spec.to_json(), METADATA["precision"]: options.precision, METADATA["layout"]: options.layout},
    )
    return StageOutput(files=[target.name], details=details)


@contextlib.contextmanager
def _quiet():
    """ai-edge-quantizer prints a summary on stdout (which belongs to --json) and progress bars on stderr."""
    from exporter.targets import native_stderr_silenced

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), native_stderr_silenced():
        yield


def make(req: StageRequest) -> StageOutput:
    """The litert row's stage."""
    return export(req.loaded, req.staging, req.name, req.options, req.calibration if req.options.precision == "int8" else None)
