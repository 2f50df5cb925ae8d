"""OpenVINO IR (.xml + .bin) for CPU servers: fp32, bf16 or int8 through NNCF, made from the verified ONNX.

row.py: the row and its options; stage.py makes the IR; runner.py runs it with its precision pinned.
"""
