"""Compile a MIL function from an `.mlpackage` into steps and execute it in NumPy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import BadInputError, UnsupportedOp
from exporter.targets.coreml.mil.ops import OPS
from exporter.targets.coreml.mil.package import MLPackage
from exporter.targets.coreml.mil.values import decode_value, dtype_name, numpy_dtype

# Ops evaluated once when the program is loaded (their inputs are all constants).
CONSTEXPR = {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_cast"}
_FLOATS = (np.float16, np.float32, np.float64)


@dataclass
class Step:
    op_type: str
    name: str
    inputs: dict  # input name -> ("var", name) | ("const", value) | ("list", [bindings])
    outputs: list  # [(name, numpy dtype or None)]


@dataclass
class FunctionInput:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, None for an unknown dimension


def _as_compute(value):
    """Float tensors enter every op as float32 (fp16 values are exactly representable)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


class Program:
    """One MIL function (``main``) ready to run: ``run({input: array}) -> {output: array}``."""

    def __init__(self, package: MLPackage, function: str = "main"):
        self.package = package
        program = package.spec.mlProgram
        if function not in program.functions:
            raise BadInputError(f"{package.path} has no MIL function {function!r}")
        fn = program.functions[function]
        self.opset = fn.opset
        block = fn.block_specializations[fn.opset]
        self.inputs = [self._function_input(i) for i in fn.inputs]
        self.output_names = list(block.outputs)
        self.op_counts: dict[str, int] = {}
        unknown = []
        for operation in block.operations:
            self.op_counts[operation.type] = self.op_counts.get(operation.type, 0) + 1
            if operation.type != "const" and operation.type not in OPS:
                unknown.append(operation.type)
            if len(operation.blocks):
                unknown.append(operation.type)
        if unknown:
            raise UnsupportedOp(sorted(set(unknown))[0], sorted(set(unknown)))
        self.constants: dict[str, Any] = {}  # decoded MIL values: arrays, scalars, strings, lists
        self.steps: list[Step] = []
        for operation in block.operations:
            self._compile(operation)

    def _function_input(self, named) -> FunctionInput:
        ttype = named.type.tensorType
        dims = tuple(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None for d in ttype.dimensions)
        return FunctionInput(named.name, numpy_dtype(dtype_name(ttype.dataType)), dims)

    def _binding(self, binding):
        if binding.WhichOneof("binding") == "name":
            if binding.name in self.constants:
                return ("const", self.constants[binding.name])
            return ("var", binding.name)
        return ("const", _as_compute(decode_value(binding.value, self.package)))

    def _compile(self, operation) -> None:
        outputs = []
        for out in operation.outputs:
            kind = out.type.WhichOneof("type")
            dtype = numpy_dtype(dtype_name(out.type.tensorType.dataType)) if kind == "tensorType" else None
            outputs.append((out.name, dtype))
        if operation.type == "const":
            value = decode_value(operation.attributes["val"], self.package)
            self.constants[outputs[0][0]] = _as_compute(value)
            return
        inputs = {}
        for key, argument in operation.inputs.items():
            bindings = [self._binding(b) for b in argument.arguments]
            inputs[key] = bindings[0] if len(bindings) == 1 and key != "values" else ("list", bindings)
        if operation.type in CONSTEXPR:
            # iOS16 constexpr ops carry their operands as attributes rather than inputs.
            for key, value in operation.attributes.items():
                if key != "name" and key not in inputs:
                    inputs[key] = ("const", _as_compute(decode_value(value, self.package)))
        step = Step(operation.type, operation.outputs[0].name if operation.outputs else operation.type, inputs, outputs)
        if operation.type in CONSTEXPR:
            for (name, _dtype), value in zip(outputs, self._execute(step, {})):
                self.constants[name] = _as_compute(value)
            return
        self.steps.append(step)

    def _execute(self, step: Step, env: dict) -> list:
        def resolve(binding):
            kind, payload = binding
            if kind == "var":
                return _as_compute(env[payload])
            if kind == "const":
                return payload
            return [resolve(b) for b in payload]

        kwargs = {key: resolve(binding) for key, binding in step.inputs.items()}
        try:
            result = OPS[step.op_type](**kwargs)
        except UnsupportedOp:
            raise
        except (BadInputError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise BadInputError(f"MIL op {step.op_type} ({step.name}) failed: {exc}") from exc
        results = list(result) if isinstance(result, tuple) else [result]
        out = []
        for (_name, dtype), value in zip(step.outputs, results):
            if dtype is not None and isinstance(value, np.ndarray) and value.dtype != dtype and dtype != np.dtype(object):
                value = value.astype(dtype)
            elif dtype is not None and dtype != np.dtype(object) and not isinstance(value, np.ndarray):
                value = np.asarray(value, dtype=dtype)
            out.append(value)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = {}  # what the ops return: arrays, or scalars and lists for non-tensor outputs
        for spec in self.inputs:
            if spec.name not in feeds:
                raise BadInputError(f"the program needs an input named {spec.name!r}")
            value = np.asarray(feeds[spec.name])
            if len(value.shape) != len(spec.shape) or any(d is not None and d != v for d, v in zip(spec.shape, value.shape)):
                raise BadInputError(f"input {spec.name} has shape {value.shape}; the program declares {spec.shape}")
            env[spec.name] = value.astype(spec.dtype)
        for step in self.steps:
            for (name, _), value in zip(step.outputs, self._execute(step, env)):
                env[name] = value
        missing = [n for n in self.output_names if n not in env and n not in self.constants]
        if missing:
            raise BadInputError(f"the program never computes its outputs {missing}")
        return {n: env[n] if n in env else self.constants[n] for n in self.output_names}


def load_program(path: Path) -> Program:
    return Program(MLPackage(Path(path)))
