"""Architecture inference: the one-time fingerprint index vs a warm lookup, measured in one run.

Run:  .venv/bin/python benchmarks/inference_index.py

Builds the key-fingerprint index of every registry entry (timm's too, when installed) into a
fresh cache folder, then infers the architecture of a few unnamed state_dicts with the warm
cache, and prints the seconds and the cold/warm ratio.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(REPO))
    os.environ["CNNEXPORT_CACHE"] = tempfile.mkdtemp(prefix="cnnexport-index-")
    from exporter import architectures
    from exporter.loading.arch_inference import infer_architecture, registry_fingerprints

    t0 = time.perf_counter()
    entries = architectures.entries(include_timm=True)
    listed = time.perf_counter() - t0
    by_source: dict[str, float] = {}
    for source in sorted({e.source for e in entries}):
        group = [e for e in entries if e.source == source]
        t0 = time.perf_counter()
        registry_fingerprints(group)
        by_source[source] = time.perf_counter() - t0
        print(f"cold index, {source}: {len(group)} entries in {by_source[source]:.1f} s")
    cold = sum(by_source.values())
    t0 = time.perf_counter()
    registry_fingerprints(entries)
    warm_read = time.perf_counter() - t0
    print(f"listing the registry (imports timm): {listed:.1f} s; warm index read: {warm_read * 1000:.1f} ms")

    names = ["mobilenet_v3_small", "efficientnet_b0", "timm:ghostnet_050", "timm:convnext_atto", "lenet5"]
    warm = []
    for name in names:
        entry = architectures.get(name)
        with __import__("torch").device("meta"):
            state_dict = entry.build().state_dict()
        t0 = time.perf_counter()
        matches = infer_architecture(state_dict, entries, file_stem="weights")
        warm.append(time.perf_counter() - t0)
        print(f"infer {name:22s} -> {', '.join(m.name for m in matches):45s} {warm[-1] * 1000:7.1f} ms")
    mean_warm = sum(warm) / len(warm)
    print(f"cold index {cold:.1f} s vs warm inference {mean_warm * 1000:.0f} ms: {cold / mean_warm:.0f}x")


if __name__ == "__main__":
    main()
