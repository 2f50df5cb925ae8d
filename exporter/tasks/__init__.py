"""Tasks that judge outputs by what their users measure, one self-contained module each.

classify / segment / dense / regress are judged in exporter/compare.py; detection (decoding, NMS,
matching, metrics and its per-precision rule) lives in exporter/tasks/detect.py.
"""
