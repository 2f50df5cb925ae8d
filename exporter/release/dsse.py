"""DSSE envelopes (github.com/secure-systems-lab/dsse): a payload, its type, and ECDSA signatures over the
pre-authentication encoding PAE(type, payload), so the type cannot be swapped under a valid signature."""

from __future__ import annotations

import base64

from exporter.release.keys import hash_for, key_id

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, private_key, payload_type: str = INTOTO_PAYLOAD_TYPE) -> dict:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = private_key.public_key()
    signature = private_key.sign(pae(payload_type, payload), ec.ECDSA(hash_for(public)))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id(public), "sig": base64.b64encode(signature).decode()}],
    }


def open_envelope(envelope: dict, public_key) -> bytes:
    """The payload, if one of the envelope's signatures is ``public_key``'s over it; else ValueError saying why."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = str(envelope["payloadType"])
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError("it is not a DSSE envelope (payloadType, payload, signatures)") from None
    message = pae(payload_type, payload)
    for signature in signatures:
        try:
            public_key.verify(signature, message, ec.ECDSA(hash_for(public_key)))
            return payload
        except InvalidSignature:
            continue
    raise ValueError(f"none of its {len(signatures)} signature(s) is by this public key (key id {key_id(public_key)[:16]}…)")
