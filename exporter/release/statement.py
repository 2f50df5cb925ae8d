"""The in-toto Statement v1 of a folder cnnexport wrote: what was verified, against which checkpoint, with what result.

Subjects are the artifact files with their sha256 (a deploy step checks the file it ships is one of
them). The predicate (PREDICATE_TYPE, documented in docs/release.md) names the checkpoint's sha256, the
tool and backend versions, the inputs each artifact was checked on, and per artifact and output the
verdict and metrics. It keeps the field names of in-toto's Test Result predicate (result,
passedTests, warnedTests, failedTests, configuration) so a reader of those finds them.

A folder is either a `cnnexport run` folder (its manifest.json says everything) or a folder of
single-verb artifacts with their NAME.report.json. Either way every artifact is hashed again here and
compared with the digest recorded when it was verified: a file changed since then is never signed.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.errors import BadInputError, VerificationFailed
from exporter.fsutil import sha256_of

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://cnnexport.readthedocs.io/release/#verification-predicate-v1"
STATEMENT_FILE = "verification.intoto.json"
SIGNATURE_FILE = "model.sig"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path} is not a cnnexport report (a JSON object)")
    return data


def _outputs(verification: dict) -> dict:
    """{output: {status, metrics}} with the metrics the output's task measured (None ones left out): every metric
    a verdict has (exporter.verify.METRICS), so a detector's box IoU / F1 and a segmenter's mIoU are kept."""
    from exporter.verify import METRICS

    return {
        name: {"task": o.get("task"), "status": o.get("status"), **{m: o[m] for m in METRICS if o.get(m) is not None}}
        for name, o in (verification.get("outputs") or {}).items()
    }


def _inputs(verification: dict) -> list[str]:
    """The input sets the artifact was checked on, each with its batch sizes ('held-out (64) b=64')."""
    return sorted(
        {f"{c['inputs']} b={c['batch_size']}" if c.get("batch_size") else c["inputs"] for c in verification.get("checks", [])}
    )


def _artifact(stage: str, kind: str, name: str, files: list[dict], verification: dict) -> dict:
    return {
        "name": name,  # the artifact: a file, or a package folder whose files are listed in files
        "stage": stage,
        "kind": kind,
        "files": files,
        "status": verification.get("status"),
        "reason": verification.get("reason") or "",
        "precision": verification.get("precision"),
        "rule": verification.get("rule"),
        "outputs": _outputs(verification),
        "inputs": _inputs(verification),
    }


def _checked_files(folder: Path, name: str, recorded: str | None) -> list[dict]:
    """[{name, sha256}] of an artifact in ``folder``: the file, or each file of a package folder (.mlpackage);
    VerificationFailed when it is missing or differs from the digest ``recorded`` when it was verified."""
    path = folder / name
    if not path.exists():
        raise VerificationFailed(f"{name} is listed as verified but is not in {folder}: nothing was signed")
    digest = sha256_of(path)
    if recorded and digest != recorded:
        raise VerificationFailed(
            f"{name} changed since cnnexport verified it (sha256 {digest[:12]}… != {recorded[:12]}…): nothing was signed"
        )
    if path.is_file():
        return [{"name": name, "sha256": digest}]
    inside = sorted(p for p in path.rglob("*") if p.is_file())
    return [{"name": str(p.relative_to(folder)), "sha256": sha256_of(p)} for p in inside]


def _from_manifest(folder: Path, manifest: dict) -> tuple[dict, dict, list[dict]]:
    """(checkpoint, versions, artifacts) of a run folder."""
    artifacts = []
    for stage, entry in manifest.get("stages", {}).items():
        files = [one for f in entry.get("files", []) for one in _checked_files(folder, f["path"], f.get("sha256"))]
        if files:
            name = entry["files"][0]["path"]
            artifacts.append(_artifact(stage, entry.get("kind", stage), name, files, entry.get("verification", {})))
    checkpoint = manifest.get("checkpoint") or {}
    return {"name": checkpoint.get("file"), "sha256": checkpoint.get("sha256")}, manifest.get("versions", {}), artifacts


def _from_reports(folder: Path, reports: list[Path], checkpoint: Path | None) -> tuple[dict, dict, list[dict]]:
    """(checkpoint, versions, artifacts) of a folder of single-verb artifacts and their NAME.report.json."""
    artifacts: list[dict] = []
    versions: dict = {}
    named: set[str] = set()
    for report_path in reports:
        report = _read_json(report_path)
        versions = versions or report.get("versions", {})
        named.add(str((report.get("model") or {}).get("checkpoint") or ""))
        for art in report.get("artifacts", []):
            primary = Path(art["path"]).name
            names = list(dict.fromkeys([primary, *(Path(f).name for f in art.get("files", []))]))
            files = [one for n in names for one in _checked_files(folder, n, art.get("sha256") if n == primary else None)]
            artifacts.append(_artifact(art.get("kind", ""), art.get("kind", ""), primary, files, art.get("verification", {})))
    if checkpoint is None:
        candidates = [Path(n) for n in named if n]
        found = [p for p in candidates if p.is_file()] or [folder / p.name for p in candidates if (folder / p.name).is_file()]
        if not found:
            raise BadInputError(
                f"the reports in {folder} do not lead to the checkpoint they were verified against: name it with --checkpoint"
            )
        checkpoint = found[0]
    return {"name": Path(checkpoint).name, "sha256": sha256_of(Path(checkpoint))}, versions, artifacts


def build_statement(folder: Path, checkpoint: Path | None = None) -> dict:
    """The in-toto Statement v1 of ``folder`` (a run folder, or artifacts with their reports)."""
    from exporter import __version__

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder; sign the folder a run or a verb wrote its artifacts to")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        ckpt, versions, artifacts = _from_manifest(folder, _read_json(manifest))
        if checkpoint is not None and sha256_of(Path(checkpoint)) != ckpt["sha256"]:
            raise VerificationFailed(f"{Path(checkpoint).name} is not the checkpoint {folder} was verified against")
    else:
        reports = sorted(folder.glob("*.report.json"))
        if not reports:
            raise BadInputError(f"{folder} holds no manifest.json and no *.report.json: nothing cnnexport verified to sign")
        ckpt, versions, artifacts = _from_reports(folder, reports, checkpoint)
    if not artifacts:
        raise BadInputError(f"{folder} lists no artifact files to sign")
    label = {a["name"]: a["status"] for a in artifacts}
    passed = [n for n, s in label.items() if s == "pass"]
    failed = [n for n, s in label.items() if s == "fail"]
    warned = [n for n, s in label.items() if s not in ("pass", "fail")]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f["name"], "digest": {"sha256": f["sha256"]}} for a in artifacts for f in a["files"]],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "result": "FAILED" if failed else "WARNED" if warned else "PASSED",
            "passedTests": passed,
            "warnedTests": warned,
            "failedTests": failed,
            "configuration": [{"name": ckpt["name"], "digest": {"sha256": ckpt["sha256"]}}],
            "checkpoint": ckpt,
            "tool": {"name": "cnnexport", "version": __version__},
            "versions": versions,
            "artifacts": artifacts,
        },
    }
