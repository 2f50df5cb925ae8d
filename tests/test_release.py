"""Release evidence (issue 44): `cnnexport sign`, `verify DIR --public-key`, `run --sign-key`, `--junit` and the
GitHub step summary, through the real CLI, with keys made here and the network cut."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import trained_digits_net

pytest.importorskip("model_signing", reason="model-signing is not installed (scripts/setup.sh installs the signing extra)")

FAST = ["--set", "calibration.samples=64", "--set", "calibration.holdout=32"]
MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Signing and checking never open a connection: any attempt fails the test (module scope: the signed run too)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


def _keys(folder: Path, curve: str = "SECP256R1") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(getattr(ec, curve)())
    private, public = folder / "private.pem", folder / "public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory, no_network):
    """A `run --sign-key` of the server-onnx-cpu recipe on a trained LeNet-5: (folder, checkpoint, private, public, stdout)."""
    from tests.conftest import run_cli

    base = tmp_path_factory.mktemp("release")
    checkpoint = base / "lenet5_digits.pt"
    shutil.copy(trained_digits_net(tmp_path_factory, "lenet5"), checkpoint)
    private, public = _keys(base / "keys")
    out = base / "dist"
    r = run_cli(
        "run",
        checkpoint,
        "--recipe",
        "server-onnx-cpu",
        "-o",
        out,
        "--calib",
        "digits",
        *FAST,
        "--sign-key",
        private,
        "--junit",
        base / "run.xml",
    )
    assert r.exit_code == 0, r
    return out, checkpoint, private, public, r


def _copy(signed_run, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(signed_run[0], folder)
    return folder


def _their_tool(folder: Path, public: Path) -> subprocess.CompletedProcess:
    """OpenSSF's own CLI, `model_signing verify key`, in a network namespace of its own where unshare allows."""
    command = [
        str(MODEL_SIGNING),
        "verify",
        "key",
        str(folder),
        "--signature",
        str(folder / "model.sig"),
        "--public_key",
        str(public),
    ]
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    return subprocess.run((["unshare", "-n"] if isolated else []) + command, capture_output=True, text=True, timeout=120)


def _flip(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_signed_run_folder_checks_out_by_cnnexport_and_by_model_signing(signed_run, cli):
    folder, checkpoint, _, public, ran = signed_run
    assert (folder / "model.sig").is_file() and (folder / "verification.intoto.json").is_file()
    assert "signed" in ran.stderr and "verification.intoto.json" in ran.stderr
    theirs = _their_tool(folder, public)
    assert theirs.returncode == 0 and "Verification succeeded" in theirs.stdout + theirs.stderr, theirs

    r = cli("verify", folder, "--public-key", public, "--json")
    assert r.exit_code == 0, r
    report = r.json()
    assert report["statement_signature"] == "valid" and report["folder_signature"] == "valid" and report["problems"] == []

    # the statement: an in-toto Statement v1 in a DSSE envelope, subjects = every artifact with its sha256
    from exporter.fsutil import sha256_of

    envelope = json.loads((folder / "verification.intoto.json").read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json" and len(envelope["signatures"]) == 1
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert {"lenet5_digits.onnx", "lenet5_digits.sim.onnx", "lenet5_digits.int8.onnx"} <= set(subjects)
    assert all(sha256_of(folder / name) == digest for name, digest in subjects.items())
    predicate = statement["predicate"]
    assert predicate["checkpoint"] == {"name": "lenet5_digits.pt", "sha256": sha256_of(checkpoint)}
    assert predicate["result"] == "PASSED" and predicate["failedTests"] == [] and predicate["tool"]["name"] == "cnnexport"
    assert {"torch", "onnxruntime", "cnnexport"} <= set(predicate["versions"])
    int8 = next(a for a in predicate["artifacts"] if a["stage"] == "int8")
    assert int8["precision"] == "int8" and int8["status"] == "pass"
    assert int8["outputs"]["logits"]["cosine"] > 0.98 and "top1_agreement" in int8["outputs"]["logits"]
    assert any(i.startswith("held-out") for i in int8["inputs"])  # what it was judged on


@pytest.mark.parametrize("victim", ["lenet5_digits.int8.onnx", "manifest.json", "report.md"])
def test_one_flipped_byte_is_caught_by_cnnexport_and_by_model_signing(signed_run, cli, tmp_path, victim):
    folder = _copy(signed_run, tmp_path)
    _flip(folder / victim)
    r = cli("verify", folder, "--public-key", signed_run[3])
    assert r.exit_code == 1, r
    assert f"changed: {victim}" in r.stderr and "is not what was signed" in r.stderr
    assert _their_tool(folder, signed_run[3]).returncode != 0


def test_a_missing_or_added_file_is_named(signed_run, cli, tmp_path):
    folder = _copy(signed_run, tmp_path)
    (folder / "lenet5_digits.sim.onnx").unlink()
    (folder / "extra.onnx").write_bytes(b"not signed")
    r = cli("verify", folder, "--public-key", signed_run[3])
    assert r.exit_code == 1, r
    assert "missing: lenet5_digits.sim.onnx" in r.stderr and "added: extra.onnx" in r.stderr


def test_a_statement_signed_by_another_key_is_refused(signed_run, cli, tmp_path):
    folder = _copy(signed_run, tmp_path)
    other_private, other_public = _keys(tmp_path / "other")
    # someone re-signs the folder with their own key: the release key refuses it, their key accepts it
    assert cli("sign", folder, "--key", other_private).exit_code == 0
    r = cli("verify", folder, "--public-key", signed_run[3])
    assert r.exit_code == 1 and "verification.intoto.json is not signed by public.pem" in r.stderr, r
    assert cli("verify", folder, "--public-key", other_public).exit_code == 0
    assert _their_tool(folder, signed_run[3]).returncode != 0


def test_with_the_checkpoint_every_artifact_is_verified_again(signed_run, cli, tmp_path):
    folder, checkpoint, _, public, _ = signed_run
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    r = cli("verify", folder, "--public-key", public, "--checkpoint", checkpoint, "--json")
    assert r.exit_code == 0, r
    rows = {row["file"]: row for row in r.json()["reverified"]}
    assert {"lenet5_digits.onnx", "lenet5_digits.int8.onnx"} <= set(rows)
    assert all(row["now"] == row["recorded"] == "pass" for row in rows.values()), rows
    assert rows["lenet5_digits.onnx"]["cosine"] > 0.9999
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # nothing rewritten

    other = tmp_path / "other.pt"
    shutil.copy(checkpoint, other)
    _flip(other, 5000)
    wrong = cli("verify", folder, "--public-key", public, "--checkpoint", other)
    assert wrong.exit_code == 1 and "is not the signed checkpoint lenet5_digits.pt" in wrong.stderr, wrong


def test_sign_refuses_what_it_cannot_vouch_for(signed_run, cli, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = _copy(signed_run, tmp_path)
    rsa_key = tmp_path / "rsa.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    r = cli("sign", folder, "--key", rsa_key)
    assert r.exit_code == 2 and "RSAPrivateKey private key; cnnexport signs with EC P-256 or P-384 keys" in r.stderr, r

    inside, _ = _keys(folder / "keys")
    r = cli("sign", folder, "--key", inside)
    assert r.exit_code == 2 and "is inside" in r.stderr, r
    shutil.rmtree(folder / "keys")

    p384, p384_public = _keys(tmp_path / "p384", "SECP384R1")
    _flip(folder / "lenet5_digits.onnx")  # changed after it was verified: never signed
    before = (folder / "verification.intoto.json").read_bytes()
    r = cli("sign", folder, "--key", p384)
    assert r.exit_code == 1 and "lenet5_digits.onnx changed since cnnexport verified it" in r.stderr, r
    assert (folder / "verification.intoto.json").read_bytes() == before  # the earlier signature left as it was
    assert not list(folder.glob(".*.partial")) and not list(folder.glob(".*.tmp"))

    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("sign", empty, "--key", p384)
    assert r.exit_code == 2 and "nothing cnnexport verified to sign" in r.stderr, r


def test_junit_and_the_github_step_summary(signed_run, cli, tmp_path, monkeypatch, exported_onnx, simple_cnn_ckpt):
    runs = ET.parse(signed_run[0].parent / "run.xml").getroot()
    suite = runs.find("testsuite")
    names = {case.get("name") for case in suite.iter("testcase")}
    assert {"lenet5_digits.onnx", "lenet5_digits.int8.onnx", "lenet5_digits.int8.onnx [logits]"} <= names
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(names)

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    tampered = tmp_path / "tampered.onnx"
    shutil.copy(exported_onnx, tampered)
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tampered))
    weight = model.graph.initializer[0]
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(tampered))
    r = cli("verify", tampered, "--checkpoint", simple_cnn_ckpt, "--junit", tmp_path / "verify.xml")
    assert r.exit_code == 1, r  # exit code unchanged by --junit
    case = next(c for c in ET.parse(tmp_path / "verify.xml").getroot().iter("testcase") if c.get("name") == "tampered.onnx")
    failure = case.find("failure")
    assert failure is not None and "max error" in failure.get("message")
    text = summary.read_text()
    assert "### cnnexport verify" in text and "| `tampered.onnx` | fail" in text


def test_the_release_workflow_of_the_docs_runs_as_written(signed_run, tmp_path):
    """docs/release.md's GitHub Actions workflow: its `run:` steps, in order, in a repository made here (the `uses:`
    steps and `pip install` aside); then a flipped byte stops the deploy job at its check step."""
    import os

    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "release.md").read_text()
    workflow = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    repo, runner = tmp_path / "repo", tmp_path / "runner"
    (repo / "checkpoints").mkdir(parents=True)
    runner.mkdir()
    shutil.copy(signed_run[1], repo / "checkpoints" / "lenet5_digits.pt")
    private, public = _keys(tmp_path / "secrets")
    (repo / "keys").mkdir()
    shutil.copy(public, repo / "keys" / "release.pub.pem")
    env = {
        **os.environ,
        **workflow["env"],
        "CALIB": "digits",  # the calibration images of a real repository: the built-in digits here
        "RUNNER_TEMP": str(runner),
        "GITHUB_STEP_SUMMARY": str(runner / "summary.md"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    secrets = {"${{ secrets.RELEASE_SIGNING_KEY }}": private.read_text()}
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0

    def step(job: str, name: str) -> subprocess.CompletedProcess:
        found = next(s for s in workflow["jobs"][job]["steps"] if s.get("name") == name)
        step_env = {k: secrets.get(v, v) for k, v in (found.get("env") or {}).items()}
        command = ["bash", "-e", "-o", "pipefail", "-c", found["run"]]
        return subprocess.run(
            (["unshare", "-n"] if isolated else []) + command,
            cwd=repo, env={**env, **step_env}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    ran = [(job, s["name"]) for job in ("export", "deploy") for s in workflow["jobs"][job]["steps"] if "run" in s]
    assert [name for _, name in ran] == [
        "Install cnnexport", "Export, verify and sign", "Install cnnexport", "Check the signatures before anything is shipped",
        "Ship",
    ]  # fmt: skip
    for job, name in ran:
        if name != "Install cnnexport":  # pip install of the released package: this checkout's venv has it
            done = step(job, name)
            assert done.returncode == 0, (name, done.stdout[-2000:], done.stderr[-2000:])
    assert (repo / "deploy" / "lenet5_digits.int8.onnx").is_file() and not list(runner.glob("*.pem"))
    cases = list(ET.parse(runner / "cnnexport-junit.xml").getroot().iter("testcase"))
    assert len(cases) >= 6 and not any(c.find("failure") is not None for c in cases)
    assert "| int8 | `lenet5_digits.int8.onnx` | pass |" in (runner / "summary.md").read_text()

    _flip(repo / "dist" / "lenet5" / "lenet5_digits.int8.onnx")
    check = step("deploy", "Check the signatures before anything is shipped")
    assert check.returncode == 1 and "changed: lenet5_digits.int8.onnx" in check.stderr, check.stderr[-2000:]


def _certificates(folder: Path, key_path: Path) -> tuple[Path, Path]:
    """(leaf, root): a root CA made here and a code-signing certificate for the key in ``key_path``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def certificate(subject, issuer, public, signer, ca: bool):
        builder = x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(public)
        builder = builder.serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        builder = builder.not_valid_after(now + datetime.timedelta(days=30))
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"),
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage), critical=True
        )
        if not ca:  # what model-signing asks of a signing certificate
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    root = certificate("release root", "release root", root_key.public_key(), root_key, True)
    leaf = certificate("release signer", "release root", key.public_key(), root_key, False)
    paths = folder / "leaf.pem", folder / "root.pem"
    for path, cert in zip(paths, (leaf, root)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


@pytest.mark.full
def test_a_certificate_chain_instead_of_a_public_key(signed_run, cli, tmp_path):
    """Full tier (required partner: test_a_signed_run_folder_checks_out_by_cnnexport_and_by_model_signing)."""
    folder = _copy(signed_run, tmp_path)
    private, _ = _keys(tmp_path / "signer")
    leaf, root = _certificates(tmp_path / "signer", private)
    r = cli("sign", folder, "--key", private, "--certificate", leaf, "--certificate-chain", root)
    assert r.exit_code == 0, r
    ok = cli("verify", folder, "--certificate-chain", root, "--json")
    assert ok.exit_code == 0 and ok.json()["folder_signature"] == "valid", ok
    command = [str(MODEL_SIGNING), "verify", "certificate", str(folder), "--signature", str(folder / "model.sig")]
    theirs = subprocess.run([*command, "--certificate_chain", str(root)], capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 0, theirs

    (tmp_path / "stranger").mkdir()
    _, stranger = _certificates(tmp_path / "stranger", private)  # the same key under another root of trust
    refused = cli("verify", folder, "--certificate-chain", stranger)
    assert refused.exit_code == 1 and "is not what was signed: model.sig" in refused.stderr, refused
    _flip(folder / "lenet5_digits.int8.onnx")
    assert "changed: lenet5_digits.int8.onnx" in cli("verify", folder, "--certificate-chain", root).stderr

    other, _ = _keys(tmp_path / "other")
    wrong = cli("sign", folder, "--key", other, "--certificate", leaf, "--certificate-chain", root)
    assert wrong.exit_code == 2 and "is for another key than the one signing" in wrong.stderr, wrong
    alone = cli("sign", folder, "--key", private, "--certificate", leaf)
    assert alone.exit_code == 2 and "--certificate needs --certificate-chain" in alone.stderr, alone
    both = cli("verify", folder, "--public-key", signed_run[3], "--certificate-chain", root)
    assert both.exit_code == 2 and "one of them" in both.stderr, both
