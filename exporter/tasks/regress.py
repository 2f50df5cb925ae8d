"""The regress task: any other output (embeddings, feature vectors, boxes), judged per channel against its own range."""

from __future__ import annotations

from exporter.tasks import elementwise

NAME = "regress"
CLASS_PER_SAMPLE = False
FLOAT_HEAD = False
MODEL_NOUN = "model"
# a regression-like task: any shape, no classes, no agreement column of its own
check_shape = elementwise.any_shape
classes_of = elementwise.no_classes
agreement_text = elementwise.numbers_only
describe_rule = elementwise.shared_rule


def recognises(shape: tuple[int, ...]) -> bool:
    return True  # the last task tried: whatever no other recognises


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    shape = "x".join(map(str, output.shape))
    return f"regression output ({shape} per sample)"


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    return elementwise.compare(ref64, out64, tol, NAME, False, None, noise, noise_cosine)
