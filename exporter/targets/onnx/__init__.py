"""The ONNX family: ONNX with a dynamic batch axis, simplified, INT8 (CPU and TensorRT flavours) and FP16.

row.py: the five rows and their options; stage.py exports, simplify.py / quantize.py / fp16.py
make the others from it, tools.py holds graph helpers they share; runner.py runs any of them
with onnxruntime; verb.py is `cnnexport quantize`, the one verb in front of three rows.
"""
