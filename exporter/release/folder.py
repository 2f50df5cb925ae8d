"""`cnnexport sign DIR` and `cnnexport verify DIR --public-key`: release evidence for a folder cnnexport wrote.

Signing writes two files into the folder, both checkable offline:

  verification.intoto.json   a DSSE envelope (signed with the key) around the in-toto Statement of
                             statement.py: every artifact's sha256 and what its verification found
  model.sig                  OpenSSF model-signing's Sigstore bundle over every file of the folder
                             (artifacts, reports, manifest, the statement), so their own tool checks it:
                             model_signing verify key DIR --signature DIR/model.sig --public_key public.pem

The statement is written first and model.sig signs it with the rest; an interrupted or failed
signing puts the earlier statement back, so the folder never holds a statement its model.sig does
not cover.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError, CnnexportError, VerificationFailed
from exporter.fsutil import sha256_of
from exporter.pipeline import Progress, noop
from exporter.release.dsse import open_envelope, sign_envelope
from exporter.release.keys import certificate_for, key_id, leaf_public_key, load_private_key, load_public_key
from exporter.release.statement import PREDICATE_TYPE, SIGNATURE_FILE, STATEMENT_FILE, build_statement

PARTIAL = ".model.sig.partial"  # the signature while it is written; never under the final name


def _model_signing():
    try:
        import model_signing
    except ImportError as exc:
        raise BackendUnavailable(
            f"signing needs OpenSSF model-signing ({exc.name or exc}): pip install 'cnnexport[signing]'"
        ) from None
    return model_signing


def _hashing(model_signing, folder: Path, *ignored: str):
    return model_signing.hashing.Config().set_ignored_paths(paths=[folder / name for name in ignored])


def signing_ready(key: Path) -> None:
    """The key readable and model-signing installed: checked before a run starts, so its end cannot fail on them."""
    load_private_key(key)
    _model_signing()


def sign_folder(
    folder: Path,
    key: Path,
    checkpoint: Path | None = None,
    progress: Progress = noop,
    certificate: Path | None = None,
    chain: tuple[Path, ...] = (),
) -> dict:
    """Write verification.intoto.json and model.sig into ``folder``; the report says what was signed.

    With ``certificate`` (the key's X.509 certificate, and ``chain`` up to a root) model.sig carries the chain
    and is checked against a root of trust instead of a public key."""
    given, folder = Path(folder), Path(folder).resolve()
    private = load_private_key(key)
    if certificate is not None:
        certificate_for(certificate, private)
        if not chain:  # model-signing keeps the chain in the bundle and needs at least the issuer
            raise BadInputError("--certificate needs --certificate-chain: at least the certificate that issued it")
    elif chain:
        raise BadInputError("--certificate-chain goes with --certificate (the signing key's own certificate)")
    if Path(key).resolve().is_relative_to(folder):
        raise BadInputError(f"the private key {key} is inside {folder}: it would be signed and shipped with the artifacts")
    model_signing = _model_signing()
    statement = build_statement(folder, checkpoint)
    progress(f"signing {len(statement['subject'])} artifact file(s) of {folder.name}: {statement['predicate']['result']}")
    envelope = sign_envelope(json.dumps(statement, indent=2, sort_keys=True).encode(), private)
    target, partial = folder / STATEMENT_FILE, folder / PARTIAL
    earlier = target.read_bytes() if target.is_file() else None
    try:
        _write_atomic(target, json.dumps(envelope, indent=2) + "\n")
        signer = (
            model_signing.signing.Config().use_certificate_signer(
                private_key=Path(key), signing_certificate=Path(certificate), certificate_chain=[Path(c) for c in chain]
            )
            if certificate is not None
            else model_signing.signing.Config().use_elliptic_key_signer(private_key=Path(key))
        )
        signer.set_hashing_config(_hashing(model_signing, folder, SIGNATURE_FILE, PARTIAL)).sign(folder, partial)
        os.replace(partial, folder / SIGNATURE_FILE)
    except BaseException:
        partial.unlink(missing_ok=True)
        if earlier is None:
            target.unlink(missing_ok=True)
        else:
            _write_atomic(target, earlier.decode())
        raise
    signed = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name not in (SIGNATURE_FILE,))
    return {
        "folder": str(given),
        "statement": STATEMENT_FILE,
        "signature": SIGNATURE_FILE,
        "key_id": key_id(private.public_key()),
        "result": statement["predicate"]["result"],
        "subjects": [s["name"] for s in statement["subject"]],
        "files_signed": len(signed),
        "checkpoint": statement["predicate"]["checkpoint"],
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _signed_resources(signature: Path) -> dict[str, str]:
    """{file: sha256} model.sig lists (read to name what changed; its signature is checked by model-signing)."""
    try:
        bundle = json.loads(signature.read_text())
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        return {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _folder_differences(folder: Path, signed: dict[str, str]) -> list[str]:
    """'changed: X' / 'missing: X' / 'added: X' for the folder against model.sig's file list."""
    present = {
        str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file() and p.name not in (SIGNATURE_FILE, PARTIAL)
    }
    out = [f"missing: {name}" for name in sorted(set(signed) - set(present))]
    out += [f"changed: {name}" for name in sorted(set(signed) & set(present)) if sha256_of(present[name]) != signed[name]]
    return out + [f"added: {name}" for name in sorted(set(present) - set(signed))]


def check_signatures(folder: Path, public_key: Path | None = None, chain: tuple[Path, ...] = ()) -> dict:
    """Both signatures and every digest of ``folder``, against ``public_key`` or a certificate ``chain`` (a root of
    trust: the signing certificate in model.sig must chain to it and its key must have signed the statement)."""
    given, folder = Path(folder), Path(folder).resolve()
    if (public_key is None) == (not chain):
        raise BadInputError("check a signed folder with --public-key KEY or with --certificate-chain CERT (one of them)")
    public = load_public_key(public_key) if public_key is not None else None
    if not folder.is_dir():
        raise BadInputError(f"{given} is not a folder; give the folder `cnnexport sign` signed")
    missing = [name for name in (STATEMENT_FILE, SIGNATURE_FILE) if not (folder / name).is_file()]
    if missing:
        raise VerificationFailed(f"{given} is not signed: {' and '.join(missing)} missing (sign it with `cnnexport sign`)")
    signer = Path(public_key).name if public_key is not None else "the certificate in model.sig"
    if public is None:
        try:
            public = leaf_public_key(json.loads((folder / SIGNATURE_FILE).read_text()))
        except ValueError:
            public = None
        if public is None:
            raise VerificationFailed(f"{SIGNATURE_FILE} carries no signing certificate: check it with --public-key")
    try:
        statement = json.loads(open_envelope(json.loads((folder / STATEMENT_FILE).read_text()), public))
    except ValueError as exc:
        raise VerificationFailed(f"{STATEMENT_FILE} is not signed by {signer}: {exc}") from None
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationFailed(f"{STATEMENT_FILE} is not a cnnexport verification statement ({statement.get('predicateType')})")
    problems = []
    for subject in statement["subject"]:
        path = folder / subject["name"]
        if not path.is_file():
            problems.append(f"missing: {subject['name']}")
        elif sha256_of(path) != subject["digest"]["sha256"]:
            problems.append(f"changed: {subject['name']}")
    model_signing = _model_signing()
    verifier = (
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
        if public_key is not None
        else model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[Path(c) for c in chain])
    )
    try:
        verifier.set_hashing_config(_hashing(model_signing, folder, SIGNATURE_FILE)).verify(folder, folder / SIGNATURE_FILE)
        folder_signature = "valid"
    except Exception as exc:  # noqa: BLE001 - model-signing / sigstore raise ValueError and their own verification errors
        folder_signature = f"invalid ({str(exc)[:200]})"
        problems += _folder_differences(folder, _signed_resources(folder / SIGNATURE_FILE)) or [f"{SIGNATURE_FILE}: {exc}"]
    problems = list(dict.fromkeys(problems))
    report = {
        "folder": str(given),
        "key_id": key_id(public),
        "statement_signature": "valid",
        "folder_signature": folder_signature,
        "result": statement["predicate"]["result"],
        "checkpoint": statement["predicate"]["checkpoint"],
        "artifacts": statement["predicate"]["artifacts"],
        "problems": problems,
        "status": "fail" if problems else "pass",
    }
    return report


def failure_sentence(report: dict) -> str | None:
    """One sentence for exit 1, or None when the folder checks out."""
    if report["problems"]:
        return f"{Path(report['folder']).name} is not what was signed: {'; '.join(report['problems'])}"
    mismatched = [r for r in report.get("reverified", []) if r["now"] != r["recorded"] and not r["now"].startswith("skipped")]
    if mismatched:
        listed = "; ".join(f"{r['file']}: recorded {r['recorded']}, now {r['now']}" for r in mismatched)
        return f"re-running the verification disagrees with the signed verdicts: {listed}"
    return None


def reverify(report: dict, checkpoint: Path, loaded, opts, progress: Progress = noop) -> dict:
    """Run the numeric verification of every signed artifact again against ``loaded`` (the checkpoint) and put
    each recorded verdict beside today's in ``report["reverified"]``; a checkpoint other than the signed one fails."""
    from dataclasses import replace

    from exporter.pipeline import verify_existing

    signed = report["checkpoint"]
    if sha256_of(Path(checkpoint)) != signed.get("sha256"):
        report["problems"].append(f"checkpoint: {Path(checkpoint).name} is not the signed checkpoint {signed.get('name')}")
        report["status"] = "fail"
        return report
    rows = []
    for artifact in report["artifacts"]:
        name, row = artifact["name"], {"file": artifact["name"], "recorded": artifact["status"]}
        if artifact["status"] not in ("pass", "fail"):
            rows.append({**row, "now": "skipped (not verified when it was signed)", "cosine": None})
            continue
        progress(f"verifying {name} again ({artifact['precision']})")
        opts_now = replace(opts, precision=artifact["precision"] or "fp32")
        try:  # write=False: the signed folder's reports are never rewritten
            now = verify_existing(Path(report["folder"]) / name, loaded, None, opts_now, write=False)
        except CnnexportError as exc:  # a backend missing here (Core ML's predict off macOS): said, not a failure
            rows.append({**row, "now": f"skipped ({exc})", "cosine": None})
            continue
        verdict = now.verification
        status = verdict.status if verdict.status != "skipped" else f"skipped ({verdict.reason})"
        rows.append({**row, "now": status, "cosine": verdict.to_dict().get("cosine")})
    report["reverified"] = rows
    if failure_sentence(report):
        report["status"] = "fail"
    return report
