"""Writes the timm key fingerprints the package ships (exporter/loading/fingerprints-timm-<versions>.json).

Architecture inference compares a checkpoint's key set with every registry entry's; for timm's
~1,400 models that index takes minutes to build on a fresh machine. Shipping it for the timm,
torch and torchvision that scripts/setup.sh installs makes the first inferred load instant there;
other versions build their own index once (exporter/loading/arch_inference.py). Re-run when a
pin moves or timm releases; older files are removed.

Run:  .venv/bin/python scripts/timm-fingerprints.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from exporter import architectures
    from exporter.loading.arch_inference import key_fingerprint, shape_signature, shipped_fingerprints_name

    started = time.perf_counter()
    entries = [e for e in architectures.entries(include_timm=True) if e.source == "timm"]
    if not entries:
        raise SystemExit("timm is not installed: pip install 'cnnexport[timm]'")
    prints = {}
    for i, entry in enumerate(entries, 1):
        signature = shape_signature(entry)
        prints[entry.name] = None if signature is None else key_fingerprint(signature)
        if i % 200 == 0:
            print(f"{i}/{len(entries)}", flush=True)
    folder = REPO / "exporter" / "loading"
    for old in folder.glob("fingerprints-timm-*.json"):
        old.unlink()
    target = folder / shipped_fingerprints_name("timm")
    target.write_text(json.dumps(prints, sort_keys=True, indent=0) + "\n")
    print(f"wrote {target.relative_to(REPO)}: {len(prints)} entries in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
