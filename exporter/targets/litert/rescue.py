"""How `--fallback auto` keeps layers in float in an int8 LiteRT model: ai-edge-quantizer's per-op recipe.

Each layer is its op and the ops feeding it (exporter/targets/litert/scopes.py), left unquantized.
The search measures on the quantized model itself: the float model is converted once, each attempt
only re-quantizes it and runs the held-out samples in the LiteRT interpreter.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from exporter.rescue.flow import RescueTarget, plain_options
from exporter.rescue.search import PLAIN, Fix, Score

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
WEIGHTED_MODULES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear")


def target(req) -> RescueTarget:
    """The litert rows' rescue: the float model converted once in a private folder, each attempt re-quantized."""
    from exporter.rescue.flow import HeldOut
    from exporter.rescue.torch_equalize import equalizable_pairs, equalized_module
    from exporter.stages import example_batch
    from exporter.targets.litert.runner import LiteRTRunner
    from exporter.targets.litert.scopes import layer_scopes
    from exporter.targets.litert.stage import METADATA, convert, import_runtime, quantize, write_metadata

    options, held = req.options, HeldOut(req)
    folder = Path(req.output or req.source).parent
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cnnexport-rescue-litert-", dir=folder))
    float_models = {False: work / "float.tflite"}
    convert(held.module, held.spec, float_models[False], options.layout)
    table = layer_scopes(import_runtime().Interpreter(model_path=str(float_models[False])), held.module)
    numbers = itertools.count()

    def float_model(equalize: bool) -> Path:
        """The float model, equalized first where the attempt asks (converted once per setting)."""
        if equalize not in float_models:
            module, _ = equalized_module(held.module, example_batch(held.spec, 1), held.calibration(PLAIN)[0])
            float_models[equalize] = work / "float-equalized.tflite"
            convert(module, held.spec, float_models[equalize], options.layout)
        return float_models[equalize]

    def options_for(floated: tuple[str, ...], fix: Fix):
        return plain_options(options, {"exclude": list(dict.fromkeys([*options.exclude, *floated])), **fix.options})

    def measure(floated: tuple[str, ...], fix: Fix) -> Score:
        attempt = work / f"attempt{next(numbers)}.tflite"
        chosen = options_for(floated, fix)
        scopes = [scope for name in chosen.exclude for scope in table.get(name, [])]
        quantize(float_model(chosen.equalize), attempt, "int8", held.calibration(fix)[0], options.layout, scopes)
        write_metadata(
            attempt, {METADATA["spec"]: held.spec.to_json(), METADATA["precision"]: "int8", METADATA["layout"]: options.layout}
        )
        score = held.judge(LiteRTRunner(attempt), fix)
        attempt.unlink()
        return score

    equalize = not options.equalize and equalizable_pairs(held.module, example_batch(held.spec, 1)) > 0
    fixes = [
        *([Fix("cross-layer equalization", {"equalize": True})] if equalize else []),
        Fix("2x calibration samples", samples_factor=2),
    ]
    return RescueTarget(list(table), options_for, fixes, measure, lambda: shutil.rmtree(work, ignore_errors=True))
