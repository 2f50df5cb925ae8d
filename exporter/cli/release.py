"""`cnnexport sign DIR` and the release side of `cnnexport verify DIR --public-key`: wiring only
(exporter/release/ does the work)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from exporter.cli.params import Command, JsonOut, Quiet, Verbose
from exporter.cli.ui import Ui, fail, run_guarded
from exporter.errors import EXIT_VERIFICATION_FAILED

SignKey = Annotated[
    Path,
    typer.Option(
        "--key",
        help="EC P-256 / P-384 private key (PEM) to sign with; an encrypted one reads its password from $CNNEXPORT_KEY_PASSWORD.",
    ),
]


CertificateChain = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--certificate-chain",
        help="Certificates (PEM) from the signing certificate up to the root of trust (repeatable).",
    ),
]


PublicKey = Annotated[
    Optional[Path],
    typer.Option(
        "--public-key",
        help="A folder `cnnexport sign` signed: check both signatures and every file's digest with this EC public "
        "key (PEM); with --checkpoint also verify every artifact again.",
    ),
]
TrustChain = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--certificate-chain",
        help="A signed folder whose model.sig carries a certificate: check it chains to these (PEM, repeatable).",
    ),
]


def sign(
    folder: Annotated[Path, typer.Argument(help="The folder a run (manifest.json) or a verb (NAME.report.json) wrote.")],
    key: SignKey,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint", help="The checkpoint the artifacts were verified against (found from the reports if not given)."
        ),
    ] = None,
    certificate: Annotated[
        Optional[Path],
        typer.Option(
            "--certificate",
            help="The key's X.509 certificate (PEM): model.sig carries it and is checked against a root of trust.",
        ),
    ] = None,
    certificate_chain: CertificateChain = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Sign a folder of verified artifacts: verification.intoto.json (what passed, against which checkpoint) and
    model.sig (OpenSSF model-signing over every file), both checkable offline, by `cnnexport verify DIR
    --public-key` or by `model_signing verify key`."""
    ui = Ui(json_out, quiet, verbose)

    def body():
        from exporter.release.folder import sign_folder

        report = sign_folder(folder, key, checkpoint, ui.progress, certificate, tuple(certificate_chain or ()))
        if json_out:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
            return
        ui.out.print(
            f"signed {escape(Path(report['folder']).name)}: {report['files_signed']} files, "
            f"{len(report['subjects'])} artifact file(s), verdict {report['result']} against "
            f"{escape(str(report['checkpoint']['name']))} (key {report['key_id'][:16]}…)"
        )
        ui.out.print(f"  {report['statement']}  in-toto statement, DSSE-signed")
        ui.out.print(f"  {report['signature']}  OpenSSF model-signing bundle over the folder")

    run_guarded(ui, body)


def check_release(ui: Ui, folder: Path, public_key: Path | None, chain, checkpoint: Path | None, load, opts) -> None:
    """`cnnexport verify DIR --public-key` (or --certificate-chain): both signatures, every digest and, with
    --checkpoint, the verdicts again."""
    from exporter.release.folder import check_signatures, failure_sentence, reverify

    report = check_signatures(folder, public_key, tuple(chain or ()))
    if checkpoint is not None and not report["problems"]:
        report = reverify(report, checkpoint, load(), opts, ui.progress)
    if ui.json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _render(ui, report)
    sentence = failure_sentence(report)
    if sentence:
        fail(ui, sentence, EXIT_VERIFICATION_FAILED)


def _render(ui: Ui, report: dict) -> None:
    from rich.table import Table

    ui.out.print(
        f"{escape(Path(report['folder']).name)}: statement signature {report['statement_signature']}, "
        f"folder signature {escape(report['folder_signature'].split(' (')[0])}, signed verdict {report['result']} "
        f"against {escape(str(report['checkpoint'].get('name')))}"
    )
    table = Table(title=None)
    for column in ("artifact", "files", "digests", "signed verdict", *(["now"] if "reverified" in report else [])):
        table.add_column(column)
    now = {r["file"]: r["now"] for r in report.get("reverified", [])}
    for artifact in report["artifacts"]:
        names = [f["name"] for f in artifact["files"]]
        bad = [p for p in report["problems"] if p.split(": ", 1)[-1] in names]
        row = [escape(artifact["name"]), str(len(names)), escape("; ".join(bad)) or "ok", artifact["status"]]
        table.add_row(*row, *([escape(now.get(artifact["name"], ""))] if now else []))
    ui.out.print(table)
    for problem in report["problems"]:
        ui.out.print(f"  [red]{escape(problem)}[/red]")


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(sign)
