"""The dense task: (N, 1, H, W) regression maps (depth, heat maps), judged per channel against its own range."""

from __future__ import annotations

from exporter.tasks import elementwise

NAME = "dense"
CLASS_PER_SAMPLE = False
FLOAT_HEAD = False
MODEL_NOUN = "dense model"
# a regression-like task: any shape, no classes, no agreement column of its own
check_shape = elementwise.any_shape
classes_of = elementwise.no_classes
agreement_text = elementwise.numbers_only
describe_rule = elementwise.shared_rule


def recognises(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    shape = "x".join(map(str, output.shape))
    return f"dense regression map ({shape} per sample)"


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    return elementwise.compare(ref64, out64, tol, NAME, False, None, noise, noise_cosine)
