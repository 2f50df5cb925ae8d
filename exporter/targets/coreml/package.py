"""A saved .mlpackage made reproducible: the same model gives the same bytes (manifests, the run cache, fleets)."""

from __future__ import annotations

from pathlib import Path


def reproducible_package(package: Path) -> None:
    """coremltools names a package's items with random UUIDs (Manifest.json), so one model saved twice differs.

    The ids become UUID5s of each item's path and the entries are written sorted by path (coremltools'
    order varies too): a rebuild has the same sha256, a fleet's manifests
    compare byte for byte, and Core ML (which only matches ids with each other) reads it the same.
    """
    import json
    import uuid

    deterministic_specs(Path(package))
    manifest = Path(package) / "Manifest.json"
    if not manifest.is_file():
        return
    data = json.loads(manifest.read_text())
    entries = data.get("itemInfoEntries") or {}
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "cnnexport:" + str(info.get("path", old)))) for old, info in entries.items()}
    # coremltools writes the entries in its dict order, which varies run to run: sort them by path.
    ordered = sorted(entries.items(), key=lambda item: str(item[1].get("path", item[0])))
    data["itemInfoEntries"] = {ids[old]: info for old, info in ordered}
    if data.get("rootModelIdentifier") in ids:
        data["rootModelIdentifier"] = ids[data["rootModelIdentifier"]]
    manifest.write_text(json.dumps(data, indent=4, sort_keys=True))


CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"


def deterministic_specs(package: Path) -> None:
    """The model spec rewritten with its maps (metadata, functions, op attributes) in key order, undated.

    coremltools serializes protobuf maps in hash order: the same model converted under another
    PYTHONHASHSEED gave other bytes (measured: three seeds, three sha256s of model.mlmodel). It also
    stamps the day of conversion: the same model converted on 4 and 5 December differed in that key
    alone. The reports say when an artifact was made; the artifact itself stays the same bytes.
    """
    from coremltools.proto import Model_pb2

    for path in sorted(package.glob("Data/**/*.mlmodel")):
        spec = Model_pb2.Model()
        spec.ParseFromString(path.read_bytes())
        spec.description.metadata.userDefined.pop(CONVERSION_DATE, None)
        path.write_bytes(spec.SerializeToString(deterministic=True))
