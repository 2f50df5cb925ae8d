"""TensorRT version numbers: the one default target and the one parser.

The calibration cache header (``TRT-100300-…``), the build plan (10.x vs 11.x) and the sidecar
check (built vs installed) all read versions; they read them here so they agree on what
'10.3.0.26' means.
"""

from __future__ import annotations

import re

from exporter.errors import BadInputError

# the TensorRT a build kit and a calibration cache are written for when no TensorRT is installed
DEFAULT_VERSION = "10.8.0"


def version_tuple(version: str) -> tuple[int, int, int]:
    """'10.3.0.26' -> (10, 3, 0); missing parts are 0 ('10' -> (10, 0, 0))."""
    parts = re.findall(r"\d+", str(version))
    if not parts:
        raise BadInputError(f"--trt-version expects MAJOR.MINOR.PATCH, got {version!r}")
    nums = [int(p) for p in parts[:3]] + [0, 0]
    return nums[0], nums[1], nums[2]


def version_text(version: str) -> str:
    """'10.3.0.26' -> '10.3.0'."""
    return ".".join(map(str, version_tuple(version)))


def version_code(version: str) -> int:
    """'10.3.0' -> 100300 (major*10000 + minor*100 + patch), as TensorRT 10 numbers itself
    (before 10: major*1000 + minor*100 + patch, '8.6.1' -> 8601)."""
    major, minor, patch = version_tuple(version)
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
