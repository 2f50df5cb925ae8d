"""ONNX models on onnxruntime's CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.errors import BadInputError
from exporter.runners.base import Runner, default_threads
from exporter.spec import METADATA_KEY, stored_spec

# onnxruntime's NCHWc layout transformer (an fp32 CPU optimization) segfaults while creating a
# session for some fp16 graphs (ViT-B/16 from `quantize --precision fp16`, onnxruntime 1.32);
# it does nothing for fp16, so fp16 models are opened without it.
FP16_DISABLED_OPTIMIZERS = ["NchwcTransformer"]


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        import onnxruntime as ort

        super().__init__()
        from exporter.errors import BackendUnavailable

        ort.set_default_logger_severity(4)  # runtime failures are caught and reported by verify
        options = ort.SessionOptions()
        options.log_severity_level = 3
        threads = threads or default_threads()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        disabled = FP16_DISABLED_OPTIMIZERS if has_fp16_weights(path) else None
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=disabled)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BadInputError(f"{path} cannot be loaded by onnxruntime ({str(exc).splitlines()[0][:300]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise BadInputError(f"{path} has {len(inputs)} inputs; cnnexport verifies single-input image models")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        # onnxruntime reports a dim_param as its name, a dim_value as an int and neither as None
        self.batch_dim = shape[0] if shape else None
        self.batch_range = (self.batch_dim, self.batch_dim) if isinstance(self.batch_dim, int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = stored_spec(meta.get(METADATA_KEY, ""), path)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return {name: np.asarray(value) for name, value in zip(self.output_names, outputs)}

    def close(self) -> None:
        self.session = None


def has_fp16_weights(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: onnxruntime gives the user-facing error
        return False
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def nonfinite_fp16_tensors(path: Path, batch: np.ndarray) -> list[str]:
    """Names of float16 intermediate tensors that hold inf/NaN for this batch.

    onnxruntime's CPU provider computes most fp16 ops in fp32 and drops the fp16 round trips
    between them, so an fp16 overflow that a GPU would hit can stay invisible in the final
    output here. Exposing every fp16 tensor as an output forces it to be materialized in fp16.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing:
                # declared by name only: a converter may leave value_info whose type predates it (fp16 on a tensor it
                # kept in fp32, or the reverse), and an output declared with a stale type fails to load; onnxruntime
                # types each output itself, and only the fp16 ones are looked at below
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                existing.add(name)
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"], disabled_optimizers=FP16_DISABLED_OPTIMIZERS
    )
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)})
    return [n for n, v in zip(names, values) if v.dtype == np.float16 and not np.isfinite(v).all()]


def open_artifact(path: Path, threads: int | None = None, device: str = "cpu") -> OnnxRuntimeRunner:
    """The ONNX format's runner (exporter.targets.onnx.row FORMAT)."""
    return OnnxRuntimeRunner(path, threads=threads, device=device)
