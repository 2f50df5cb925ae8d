"""Core ML: coremltools.convert to an ML program `.mlpackage`.

* compute precision fp16 (default) or fp32;
* tensor input ``input`` (normalized NCHW, like every other artifact) or an image input
  ``image`` taking 0..255 pixels: the spec's normalization is folded into Core ML's image
  preprocessing. Core ML's image scale is ONE scalar for all channels, so:
    - one std for all channels:  scale = 1/(255 std),  bias_c = -mean_c/std;
    - per-channel std:           scale = 1/255,        bias_c = -mean_c,
      and a per-channel multiply by 1/std_c stays inside the model (first op of the program);
* classifier: class labels (the spec's labels, else "0".."K-1") with outputs ``classLabel`` and
  ``classLabel_probs``; the probabilities are the softmax of the logits (a softmax is appended,
  recorded as ``cnnexport.classifier_output = softmax`` so verification compares against the
  softmax of the reference logits);
* batch: a range MIN:MAX (default 1:64) or a fixed size;
* minimum deployment target (iOS15 .. iOS18, macOS12 .. macOS15);
* metadata: author, license, version, description, the input's description, and the
  cnnexport spec (user-defined key ``cnnexport.spec``);
* optional weight compression through coremltools.optimize.coreml: ``palettize:N`` (k-means
  LUT with N bits) or ``linear8`` (symmetric per-channel int8); both need iOS16 or later.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from exporter import tasks
from exporter.errors import BadInputError, ExportError, root_cause
from exporter.spec import METADATA_KEY
from exporter.stages import StageOutput, decomposed_attention, example_batch
from exporter.targets.coreml.package import reproducible_package
from exporter.targets.coreml.patches import (
    fix_integer_floor_divide,
    fix_scalar_cast,
    fixed_size_adaptive_pools,
    traced_as_convertible_ops,
    wrap_for_tracing,
)

TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
# macOS targets that pair with an iOS target (coremltools treats them the same).
_TARGET_ORDER = {"iOS15": 15, "macOS12": 15, "iOS16": 16, "macOS13": 16, "iOS17": 17, "macOS14": 17, "iOS18": 18, "macOS15": 18}
PRECISIONS = ("fp16", "fp32")
DEFAULT_BATCH = (1, 64)
PALETTE_BITS = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class Compression:
    kind: str  # "palettize" | "linear8"
    nbits: int = 8

    def describe(self) -> str:
        return f"palettize:{self.nbits}" if self.kind == "palettize" else "linear8"


# Ops multiplying by a constant wholly below fp16's normal range stay fp32, as in the ONNX fp16
# stage (timm's LayerScale starts at 1e-5, a subnormal in fp16): MobileNetV4-hybrid's fp16 program
# was 0.014 x range off with them in fp16.
_MULTIPLYING_MIL_OPS = ("mul", "real_div", "matmul", "linear", "conv")


def fp16_safe_op(op) -> bool:
    """coremltools op_selector: True where the op may compute in fp16."""
    import numpy as np

    from exporter.targets.onnx.fp16 import FP16_MIN_NORMAL

    if op.op_type not in _MULTIPLYING_MIL_OPS:
        return True
    for var in op.inputs.values():
        value = getattr(var, "val", None)
        if isinstance(value, np.ndarray) and value.size and value.dtype.kind == "f":
            peak = float(np.abs(value).max())
            if 0.0 < peak < FP16_MIN_NORMAL:
                return False
        elif isinstance(value, (float, np.floating)) and 0.0 < abs(float(value)) < FP16_MIN_NORMAL:
            return False
    return True


def parse_compression(text: str | None) -> Compression | None:
    if not text:
        return None
    text = text.strip().lower()
    if text in ("linear8", "linear:8", "int8"):
        return Compression("linear8")
    if text.startswith("palettize:"):
        try:
            bits = int(text.split(":", 1)[1])
        except ValueError:
            bits = -1
        if bits not in PALETTE_BITS:
            raise BadInputError(f"--compress palettize:N takes N in {', '.join(map(str, PALETTE_BITS))}, got {text!r}")
        return Compression("palettize", bits)
    raise BadInputError(f"--compress must be palettize:N (N = 1,2,3,4,6,8) or linear8, got {text!r}")


def parse_batch(text: str | None) -> tuple[int, int]:
    """'1:16' -> (1, 16); '4' -> (4, 4)."""
    if text is None:
        return DEFAULT_BATCH
    parts = text.replace(" ", "").split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise BadInputError(f"--batch expects MIN:MAX or N (e.g. 1:16), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] < 1 or values[1] < values[0]:
        raise BadInputError(f"--batch expects 1 <= MIN <= MAX, got {text!r}")
    return values[0], values[1]


def check_options(options) -> None:
    """The stage table's preflight: --batch and --compress parse (BadInputError, exit 2)."""
    parse_batch(options.batch)
    parse_compression(options.compress)


def image_preprocessing(spec) -> tuple[float, list[float], list[float] | None]:
    """(scale, bias per channel, in-model per-channel multiplier or None) for an image input."""
    mean, std = spec.channel_mean(), spec.channel_std()
    if len(set(std)) == 1:
        s = std[0]
        return 1.0 / (255.0 * s), [-m / s for m in mean], None
    return 1.0 / 255.0, [-m for m in mean], [1.0 / s for s in std]


def export(
    loaded,
    staging_dir: Path,
    name: str,
    precision: str = "fp16",
    image_input: bool = False,
    classifier: bool = False,
    batch: tuple[int, int] | str | None = None,
    min_target: str | None = None,
    compress: str | Compression | None = None,
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the user-facing name
    version: str | None = None,
    description: str | None = None,
    color_layout: str = "RGB",
) -> StageOutput:
    ct = _import_coremltools()
    fix_scalar_cast(ct)
    fix_integer_floor_divide(ct)
    spec = loaded.spec
    compression, (low, high), target_name = _checked_request(
        spec, name, precision, image_input, classifier, batch, min_target, compress, color_layout
    )
    scale, bias, inv_std = image_preprocessing(spec) if image_input else (None, None, None)
    module = wrap_for_tracing(loaded.module, inv_std, softmax=classifier)
    image = (scale, bias) if image_input else None
    convert_args = _convert_args(ct, spec, (low, high), precision, target_name, image, classifier, color_layout)
    mlmodel, swapped_pools = _convert(ct, module, spec, convert_args, (low, high), compression)
    mlmodel.author = author or ""
    mlmodel.license = license or ""
    mlmodel.version = version or ""
    _describe(mlmodel, spec, description, image_input, classifier, color_layout, (low, high))
    _record_metadata(mlmodel, spec, precision, classifier, compression, (low, high))
    target = Path(staging_dir) / name
    try:
        mlmodel.save(str(target))
    except Exception as exc:
        raise ExportError(f"coremltools could not save {name}: {root_cause(exc)}") from exc
    reproducible_package(target)
    return StageOutput(
        files=[name],
        details={
            "precision": precision,
            "input": "image" if image_input else "input",
            "input_kind": "image" if image_input else "tensor",
            "color_layout": ("GRAYSCALE" if spec.channels == 1 else color_layout) if image_input else None,
            "image_scale": scale,
            "image_bias": bias,
            "in_model_std_multiplier": inv_std,
            "classifier": classifier,
            "outputs": ["classLabel", "classLabel_probs"] if classifier else spec.output_names,
            "batch": [low, high],
            "min_target": target_name,
            "compression": compression.describe() if compression else None,
            "ops": _op_counts(mlmodel),
            "adaptive_pools_as_fixed": swapped_pools,
            "coremltools": ct.__version__,
        },
    )


def _import_coremltools():
    """coremltools, imported quietly; its absence is BackendUnavailable (exit 3) saying what to install."""
    try:
        from exporter.targets.coreml.mil.package import quiet_import_coremltools

        return quiet_import_coremltools()
    except ImportError as exc:
        from exporter.errors import BackendUnavailable

        raise BackendUnavailable(
            f"Core ML conversion needs coremltools ({exc}); install it with: pip install 'cnnexport[coreml]'"
        ) from None


def _checked_request(
    spec, name: str, precision: str, image_input: bool, classifier: bool, batch, min_target, compress, color_layout: str
) -> tuple[Compression | None, tuple[int, int], str]:
    """(compression, batch range, minimum target) once every option is checked: bad input fails before any tracing."""
    if not name.endswith(".mlpackage"):
        raise BadInputError(f"a Core ML ML program is a folder ending in .mlpackage, got {name!r}")
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision must be fp16 or fp32, got {precision!r}")
    compression = compress if isinstance(compress, Compression) or compress is None else parse_compression(compress)
    low, high = batch if isinstance(batch, tuple) else parse_batch(batch)
    target_name = min_target or ("iOS16" if compression else "iOS15")
    if target_name not in TARGETS:
        raise BadInputError(f"--min-target must be one of {', '.join(TARGETS)}, got {target_name!r}")
    if compression and _TARGET_ORDER[target_name] < 16:
        raise BadInputError(f"weight compression needs --min-target iOS16 (or macOS13) or later, not {target_name}")
    if image_input and spec.channels not in (1, 3):
        raise BadInputError(f"an image input needs 1 or 3 channels; this model takes {spec.channels}")
    if color_layout not in ("RGB", "BGR"):
        raise BadInputError(f"color layout must be RGB or BGR, got {color_layout!r}")
    output_names = spec.output_names
    if classifier and (len(output_names) != 1 or (spec.outputs and not tasks.get(spec.outputs[0].task).CLASS_PER_SAMPLE)):
        raise BadInputError(
            f"--classifier needs a model with one (N, C) logits output; this one returns {', '.join(output_names)}"
            + (f" ({spec.outputs[0].task})" if len(spec.outputs) == 1 else "")
            + ": export it without --classifier"
        )
    return compression, (low, high), target_name


def _convert_args(
    ct, spec, batch: tuple[int, int], precision: str, target_name: str, image: tuple | None, classifier: bool, color_layout: str
) -> dict:
    """ct.convert's arguments: the input (a tensor, or an image whose (scale, bias) hold the normalization), outputs."""
    import numpy as np

    low, high = batch
    batch_dim = ct.RangeDim(lower_bound=low, upper_bound=high, default=low) if high > low else low
    shape = ct.Shape(shape=(batch_dim, *spec.input_shape))
    if image is not None:
        scale, bias = image
        layout = ct.colorlayout.GRAYSCALE if spec.channels == 1 else getattr(ct.colorlayout, color_layout)
        inputs = [
            ct.ImageType(
                name="image", shape=shape, scale=scale, bias=bias if spec.channels == 3 else bias[0], color_layout=layout
            )
        ]
    else:
        inputs = [ct.TensorType(name="input", shape=shape, dtype=np.float32)]
    convert_args = dict(
        inputs=inputs,
        convert_to="mlprogram",
        compute_precision=ct.transform.FP16ComputePrecision(op_selector=fp16_safe_op)
        if precision == "fp16"
        else ct.precision.FLOAT32,
        minimum_deployment_target=getattr(ct.target, target_name),
    )
    if classifier:
        labels = list(spec.labels) if spec.labels else [str(i) for i in range(spec.num_classes)]
        convert_args["classifier_config"] = ct.ClassifierConfig(labels)
    else:
        convert_args["outputs"] = [ct.TensorType(name=n) for n in spec.output_names]
    return convert_args


def _convert(ct, module, spec, convert_args: dict, batch: tuple[int, int], compression: Compression | None):
    """(ML program, adaptive pools swapped for fixed ones): traced and converted with coremltools' chatter silenced."""
    import torch

    low, high = batch
    flexible = high > low
    captured = io.StringIO()
    quiet = logging.getLogger("coremltools")
    previous = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            example = example_batch(spec, max(2, low) if flexible else low)
            with fixed_size_adaptive_pools(module, example) as swapped_pools, traced_as_convertible_ops(), decomposed_attention():
                traced = torch.jit.trace(module, example, check_trace=False)
            try:
                mlmodel = ct.convert(traced, **convert_args)
            except Exception as exc:  # coremltools raises many error types
                if not flexible or not _converts_with_fixed_batch(ct, traced, convert_args, spec, low):
                    raise
                raise ExportError(
                    f"coremltools cannot convert this model with a flexible batch {low}:{high} ({root_cause(exc)}); "
                    f"the model does not allow a dynamic batch (e.g. adaptive pooling to a size that does not divide its input, "
                    f"or an op that reads the batch size): "
                    f"export a fixed batch with --batch {low}"
                ) from exc
            if compression is not None:
                mlmodel = _compress(mlmodel, compression)
    except (ExportError, BadInputError):
        raise
    except Exception as exc:
        raise ExportError(f"coremltools could not convert the model: {root_cause(exc)}") from exc
    finally:
        quiet.setLevel(previous)
    return mlmodel, swapped_pools


def _describe(mlmodel, spec, description, image_input: bool, classifier: bool, color_layout: str, batch: tuple[int, int]):
    """The descriptions Xcode shows: the model, its input (with the normalization in words) and each output."""
    what = tasks.get(spec.outputs[0].task).MODEL_NOUN if spec.outputs else tasks.get(tasks.DEFAULT).MODEL_NOUN
    mlmodel.short_description = description or f"{spec.arch} {what} ({spec.num_classes} classes), exported by cnnexport"
    c, h, w = spec.input_shape
    mean_text = ", ".join(f"{m:g}" for m in spec.channel_mean())
    std_text = ", ".join(f"{s:g}" for s in spec.channel_std())
    if image_input:
        order = "grayscale" if c == 1 else color_layout
        mlmodel.input_description["image"] = (
            f"{order} image {w}x{h}, pixels 0..255; normalized inside as (p/255 - [{mean_text}]) / [{std_text}]"
        )
    else:
        low, high = batch
        mlmodel.input_description["input"] = (
            f"float32 NCHW batch ({low}..{high}) x {c}x{h}x{w}, normalized: (pixel/255 - [{mean_text}]) / [{std_text}]"
        )
    if classifier:
        mlmodel.output_description["classLabel"] = "most likely class"
        mlmodel.output_description["classLabel_probs"] = "probability of each class (softmax of the logits)"
    else:
        for output in spec.outputs or ():
            mlmodel.output_description[output.name] = _output_text(output)
        if not spec.outputs:
            mlmodel.output_description["logits"] = f"class logits, {spec.num_classes} per sample"


def _record_metadata(mlmodel, spec, precision: str, classifier: bool, compression: Compression | None, batch: tuple[int, int]):
    """cnnexport's user-defined metadata: the spec and how the program was made, read back by verification."""
    from exporter import __version__

    meta = mlmodel.user_defined_metadata
    meta[METADATA_KEY] = spec.to_json()
    meta["cnnexport.version"] = __version__
    meta["cnnexport.precision"] = precision
    meta["cnnexport.batch"] = f"{batch[0]}:{batch[1]}"
    if classifier:
        meta["cnnexport.classifier_output"] = "softmax"
    if compression:
        meta["cnnexport.compression"] = compression.describe()


def _output_text(output) -> str:
    """The Core ML description of one output: what it holds per sample."""
    return tasks.get(output.task).describe_output(output)


def _converts_with_fixed_batch(ct, traced, convert_args: dict, spec, batch: int) -> bool:
    """Does the failure come from the flexible batch? Try the same conversion with a fixed one."""
    first = convert_args["inputs"][0]
    shape = (batch, *spec.input_shape)
    if isinstance(first, ct.ImageType):
        fixed = ct.ImageType(name=first.name, shape=shape, scale=first.scale, bias=first.bias, color_layout=first.color_layout)
    else:
        fixed = ct.TensorType(name=first.name, shape=shape, dtype=first.dtype)
    try:
        ct.convert(traced, **{**convert_args, "inputs": [fixed]})
    except Exception:  # noqa: BLE001 - it fails either way: report the original error
        return False
    return True


def _compress(mlmodel, compression: Compression):
    import coremltools.optimize.coreml as cto

    if compression.kind == "palettize":
        config = cto.OptimizationConfig(
            global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=compression.nbits, weight_threshold=2048)
        )
        return cto.palettize_weights(mlmodel, config)
    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=2048
        )
    )
    return cto.linear_quantize_weights(mlmodel, config)


def _op_counts(mlmodel) -> dict[str, int]:
    spec = mlmodel.get_spec()
    fn = spec.mlProgram.functions["main"]
    counts: dict[str, int] = {}
    for operation in fn.block_specializations[fn.opset].operations:
        if operation.type != "const":
            counts[operation.type] = counts.get(operation.type, 0) + 1
    return dict(sorted(counts.items()))


def make(req) -> StageOutput:
    """The coreml row's stage: the batch range and the compression spelled in the options, parsed."""
    stage_options = {
        **req.options.model_dump(),
        "batch": parse_batch(req.options.batch),
        "compress": parse_compression(req.options.compress),
    }
    return export(req.loaded, req.staging, req.name, **stage_options)


def verify_batches(options, batch_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The row's hook: verification batch sizes clipped into the program's --batch range."""
    low, high = parse_batch(options.batch)
    return tuple(sorted({min(max(b, low), high) for b in batch_sizes}))
