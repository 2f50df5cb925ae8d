"""The features task: a backbone's feature maps or vectors (timm ``features_only``), not class scores.

Judged like a regression output, per channel against each channel's own range, with the
cosine; a feature map has no classes, so no top-1 or mIoU. Never guessed from a shape: a source
says so (a timm feature extractor) or ``--task features``.
"""

from __future__ import annotations

from exporter.tasks import elementwise

NAME = "features"
CLASS_PER_SAMPLE = False
FLOAT_HEAD = False
MODEL_NOUN = "feature extractor"
# a regression-like task: any shape, no classes, no agreement column of its own
check_shape = elementwise.any_shape
classes_of = elementwise.no_classes
agreement_text = elementwise.numbers_only
describe_rule = elementwise.shared_rule


def recognises(shape: tuple[int, ...]) -> bool:
    return False


def describe_output(output) -> str:
    """What one output holds per sample, in words (Core ML's output descriptions)."""
    shape = "x".join(map(str, output.shape))
    return f"feature map ({shape} per sample)" if len(output.shape) == 3 else f"features ({shape} per sample)"


def compare(ref64, out64, tol, noise=None, noise_cosine=None, image_size=None) -> dict:
    return elementwise.compare(ref64, out64, tol, NAME, False, None, noise, noise_cosine)
