"""Written by exporter.hooks.typed_hooks_source (tests/test_plugin_signatures.py keeps it current): mypy
checks every built-in row's and Format's string hook against the call it gets. Imports nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import exporter.build
    import exporter.rescue.flow
    import exporter.targets.coreml.runner
    import exporter.targets.coreml.stage
    import exporter.targets.executorch.rescue
    import exporter.targets.executorch.runner
    import exporter.targets.executorch.stage
    import exporter.targets.litert.rescue
    import exporter.targets.litert.runner
    import exporter.targets.litert.stage
    import exporter.targets.onnx.checks
    import exporter.targets.onnx.flow
    import exporter.targets.onnx.fp16
    import exporter.targets.onnx.quantize
    import exporter.targets.onnx.rescue
    import exporter.targets.onnx.runner
    import exporter.targets.onnx.simplify
    import exporter.targets.onnx.stage
    import exporter.targets.onnx.verb
    import exporter.targets.openvino.rescue
    import exporter.targets.openvino.runner
    import exporter.targets.openvino.stage
    import exporter.targets.tensorrt.flow
    import exporter.targets.tensorrt.runner
    import exporter.targets.torchscript.runner
    import exporter.targets.torchscript.stage
    from exporter.hooks import FourArguments, OneArgument, RunnerFactory, ThreeArguments, TwoArguments

    artifactkind_torchscript_stage: OneArgument = exporter.targets.torchscript.stage.make
    artifactkind_torchscript_build: OneArgument = exporter.build.from_checkpoint
    artifactkind_onnx_stage: OneArgument = exporter.targets.onnx.stage.make
    artifactkind_onnx_build: OneArgument = exporter.build.from_checkpoint
    artifactkind_simplify_stage: OneArgument = exporter.targets.onnx.simplify.make
    artifactkind_simplify_build: OneArgument = exporter.build.from_onnx
    artifactkind_int8_stage: OneArgument = exporter.targets.onnx.quantize.make
    artifactkind_int8_build: OneArgument = exporter.targets.onnx.flow.quantize
    artifactkind_int8_command: OneArgument = exporter.targets.onnx.verb.register
    artifactkind_int8_rescue: OneArgument = exporter.targets.onnx.rescue.target
    artifactkind_int8_tensorrt_stage: OneArgument = exporter.targets.onnx.quantize.make_tensorrt
    artifactkind_int8_tensorrt_build: OneArgument = exporter.targets.onnx.flow.quantize
    artifactkind_int8_tensorrt_rescue: OneArgument = exporter.targets.onnx.rescue.target
    artifactkind_fp16_stage: OneArgument = exporter.targets.onnx.fp16.make
    artifactkind_fp16_build: OneArgument = exporter.build.from_onnx
    artifactkind_coreml_stage: OneArgument = exporter.targets.coreml.stage.make
    artifactkind_coreml_build: OneArgument = exporter.build.from_checkpoint
    artifactkind_coreml_check: OneArgument = exporter.targets.coreml.stage.check_options
    artifactkind_coreml_verify_batches: TwoArguments = exporter.targets.coreml.stage.verify_batches
    artifactkind_tensorrt_build: OneArgument = exporter.targets.tensorrt.flow.build_artifacts
    artifactkind_tensorrt_check: OneArgument = exporter.targets.tensorrt.flow.check_options
    artifactkind_tensorrt_from_recipe: FourArguments = exporter.targets.tensorrt.flow.options_from_recipe
    artifactkind_tensorrt_extra_outputs: OneArgument = exporter.targets.tensorrt.flow.kit_outputs
    artifactkind_tensorrt_needs_of: OneArgument = exporter.targets.tensorrt.flow.upstream_stages
    artifactkind_openvino_stage: OneArgument = exporter.targets.openvino.stage.make
    artifactkind_openvino_build: OneArgument = exporter.rescue.flow.build_from_onnx
    artifactkind_openvino_check: OneArgument = exporter.targets.openvino.stage.check_options
    artifactkind_openvino_rescue: OneArgument = exporter.targets.openvino.rescue.target
    artifactkind_executorch_stage: OneArgument = exporter.targets.executorch.stage.make
    artifactkind_executorch_build: OneArgument = exporter.rescue.flow.build_from_checkpoint
    artifactkind_executorch_check: OneArgument = exporter.targets.executorch.stage.check_options
    artifactkind_executorch_verify_batches: TwoArguments = exporter.targets.executorch.stage.verify_batches
    artifactkind_executorch_rescue: OneArgument = exporter.targets.executorch.rescue.target
    artifactkind_executorch_int8_stage: OneArgument = exporter.targets.executorch.stage.make
    artifactkind_executorch_int8_build: OneArgument = exporter.rescue.flow.build_from_checkpoint
    artifactkind_executorch_int8_check: OneArgument = exporter.targets.executorch.stage.check_options
    artifactkind_executorch_int8_verify_batches: TwoArguments = exporter.targets.executorch.stage.verify_batches
    artifactkind_executorch_int8_rescue: OneArgument = exporter.targets.executorch.rescue.target
    artifactkind_litert_stage: OneArgument = exporter.targets.litert.stage.make
    artifactkind_litert_build: OneArgument = exporter.rescue.flow.build_from_checkpoint
    artifactkind_litert_check: OneArgument = exporter.targets.litert.stage.check_options
    artifactkind_litert_rescue: OneArgument = exporter.targets.litert.rescue.target
    artifactkind_litert_int8_stage: OneArgument = exporter.targets.litert.stage.make
    artifactkind_litert_int8_build: OneArgument = exporter.rescue.flow.build_from_checkpoint
    artifactkind_litert_int8_check: OneArgument = exporter.targets.litert.stage.check_options
    artifactkind_litert_int8_rescue: OneArgument = exporter.targets.litert.rescue.target
    format_torchscript_runner: RunnerFactory = exporter.targets.torchscript.runner.open_artifact
    format_torchscript_detect: OneArgument = exporter.targets.torchscript.runner.is_torchscript
    format_onnx_runner: RunnerFactory = exporter.targets.onnx.runner.open_artifact
    format_onnx_checks: ThreeArguments = exporter.targets.onnx.checks.onnx_checks
    format_coreml_runner: RunnerFactory = exporter.targets.coreml.runner.open_artifact
    format_tensorrt_runner: RunnerFactory = exporter.targets.tensorrt.runner.open_artifact
    format_tensorrt_kit: TwoArguments = exporter.targets.tensorrt.flow.lint_kit
    format_openvino_runner: RunnerFactory = exporter.targets.openvino.runner.open_artifact
    format_executorch_runner: RunnerFactory = exporter.targets.executorch.runner.open_artifact
    format_litert_runner: RunnerFactory = exporter.targets.litert.runner.open_artifact
