"""EC keys in PEM (P-256 or P-384), the kind OpenSSF model-signing's `key` method takes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from exporter.errors import BadInputError

CURVES = {"secp256r1": "sha256", "secp384r1": "sha384"}  # curve -> the hash ECDSA signs with (as model-signing)
PASSWORD_ENV = "CNNEXPORT_KEY_PASSWORD"  # a password-protected private key's password, never a flag (shell history)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read the {what} {path} ({exc.strerror or exc})") from None


def _checked_curve(key, path: Path, what: str):
    from cryptography.hazmat.primitives.asymmetric import ec

    curve = key.curve.name if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) else None
    if curve not in CURVES:
        kind = f"EC {curve}" if curve else type(key).__name__.lstrip("_")
        raise BadInputError(f"{path} holds a {kind} {what}; cnnexport signs with EC P-256 or P-384 keys (PEM)")
    return key


def load_private_key(path: Path):
    """The EC private key in ``path`` (PEM; encrypted ones read their password from $CNNEXPORT_KEY_PASSWORD)."""
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "private key")
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise BadInputError(f"{path} is encrypted: set {PASSWORD_ENV} to its password") from None
    except ValueError:
        raise BadInputError(f"{path} is not a PEM private key (or {PASSWORD_ENV} is not its password)") from None
    return _checked_curve(key, path, "private key")


def load_public_key(path: Path):
    """The EC public key in ``path`` (PEM, SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError:
        raise BadInputError(f"{path} is not a PEM public key") from None
    return _checked_curve(key, path, "public key")


def key_id(public_key) -> str:
    """sha256 of the public key's DER encoding: names the key in a signature without carrying it."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def hash_for(public_key):
    from cryptography.hazmat.primitives import hashes

    return {"sha256": hashes.SHA256, "sha384": hashes.SHA384}[CURVES[public_key.curve.name]]()


def load_certificate(path: Path):
    """The X.509 certificate in ``path`` (PEM)."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError:
        raise BadInputError(f"{path} is not a PEM X.509 certificate") from None


def certificate_for(certificate: Path, private_key) -> None:
    """BadInputError unless ``certificate`` certifies ``private_key`` (a signature its chain would not vouch for)."""
    cert = load_certificate(certificate)
    if key_id(cert.public_key()) != key_id(private_key.public_key()):
        raise BadInputError(f"the certificate {certificate} is for another key than the one signing")


def leaf_public_key(bundle: dict):
    """The public key of the signing certificate in a model-signing bundle (its chain's first), or None."""
    import base64

    from cryptography import x509

    material = bundle.get("verificationMaterial") or {}
    chain = (material.get("x509CertificateChain") or {}).get("certificates") or []
    raw = chain[0]["rawBytes"] if chain else (material.get("certificate") or {}).get("rawBytes")
    if not raw:
        return None
    try:
        return x509.load_der_x509_certificate(base64.b64decode(raw)).public_key()
    except ValueError:
        return None
