"""Files for servers that read neither ONNX metadata nor cnnexport's reports (`--consumer-files`):

  NAME.labels.txt   one class name per line, line i = class i: what Triton's `label_filename` reads
  NAME.json         the input spec as JSON (shape, mean, std, labels, outputs); a TensorRT engine has its
                    sidecar NAME.json already and gets only the labels

Both are plain text a consumer parses without cnnexport (never Python repr), written into the stage's
staging folder so they are installed, hashed into the manifest and signed with the artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEC_FORMAT = "cnnexport.spec/1"


def write_consumer_files(spec, folder: Path, name: str, with_spec: bool = True) -> list[str]:
    """Write NAME.labels.txt (where the model has class names) and, with ``with_spec``, NAME.json into ``folder``."""
    written = []
    if spec.labels:
        (Path(folder) / f"{name}.labels.txt").write_text("".join(f"{label}\n" for label in spec.labels), encoding="utf-8")
        written.append(f"{name}.labels.txt")
    if with_spec:
        document = {"format": SPEC_FORMAT, "artifact": name, "spec": spec.to_dict()}
        (Path(folder) / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written.append(f"{name}.json")
    return written


def note(spec) -> str | None:
    """Why no labels file was written, or None."""
    return None if spec.labels else "no labels file: the model has no class names (give them with --labels FILE)"
