#!/usr/bin/env python3
"""Writes tests/vectors/interop.json: one valid token per algorithm authgate
supports, signed by an implementation other than ours (Python's
`cryptography`, on OpenSSL), with the JWKS and HMAC secrets that verify them.

The tests (tests/it/interop.rs) serve the JWKS from a real issuer, send every
token through a real gateway, and flip one bit of each signature. Run this
only to regenerate the vectors (`pip install cryptography`); the output is
committed so the test suite needs no Python.
"""
import base64
import hashlib
import hmac
import json
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://interop.authgate.test"
# HMAC tokens come from a separate issuer: one shared secret, never a JWKS.
HMAC_ISSUER = "https://interop-hmac.authgate.test"
IAT = 1_700_000_000
EXP = 4_102_444_800  # 2100-01-01


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, length: int | None = None) -> bytes:
    length = length or (n.bit_length() + 7) // 8
    return n.to_bytes(length, "big")


HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def signing_input(alg: str, kid: str | None, iss: str = ISSUER) -> bytes:
    header = {"alg": alg, "typ": "at+jwt"}
    if kid:
        header["kid"] = kid
    claims = {
        "iss": iss,
        "aud": "api",
        "sub": f"interop-{alg}",
        "scope": "read",
        "iat": IAT,
        "exp": EXP,
    }
    text = lambda o: b64(json.dumps(o, separators=(",", ":")).encode())
    return f"{text(header)}.{text(claims)}".encode()


def main(out: str) -> None:
    jwks, tokens = [], {}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pub = rsa_key.public_key().public_numbers()
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]:
        kid = f"rsa-{alg.lower()}"
        jwks.append({"kty": "RSA", "kid": kid, "use": "sig", "alg": alg,
                     "n": b64(uint(rsa_pub.n)), "e": b64(uint(rsa_pub.e))})
        h = HASHES[alg[2:]]
        pad = (padding.PKCS1v15() if alg.startswith("RS")
               else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size))
        data = signing_input(alg, kid)
        tokens[alg] = f"{data.decode()}.{b64(rsa_key.sign(data, pad, h))}"
    for alg, curve, size in [("ES256", ec.SECP256R1(), 32), ("ES384", ec.SECP384R1(), 48)]:
        key = ec.generate_private_key(curve)
        pub = key.public_key().public_numbers()
        kid = f"ec-{alg.lower()}"
        jwks.append({"kty": "EC", "kid": kid, "use": "sig", "crv": curve.name.replace("secp", "P-").replace("r1", ""),
                     "x": b64(uint(pub.x, size)), "y": b64(uint(pub.y, size))})
        data = signing_input(alg, kid)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(HASHES[alg[2:]])))
        tokens[alg] = f"{data.decode()}.{b64(uint(r, size) + uint(s, size))}"
    ed = ed25519.Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwks.append({"kty": "OKP", "crv": "Ed25519", "kid": "okp-eddsa", "use": "sig", "x": b64(raw)})
    data = signing_input("EdDSA", "okp-eddsa")
    tokens["EdDSA"] = f"{data.decode()}.{b64(ed.sign(data))}"
    # The secret is the text of an environment variable, as hmac_secret_env reads it.
    secret = b64(os.urandom(48)).encode()
    for alg in ["HS256", "HS384", "HS512"]:
        data = signing_input(alg, None, HMAC_ISSUER)
        mac = hmac.new(secret, data, getattr(hashlib, f"sha{alg[2:]}")).digest()
        tokens[alg] = f"{data.decode()}.{b64(mac)}"
    doc = {
        "generated_by": "scripts/interop_vectors.py with Python cryptography "
                        + __import__("cryptography").__version__,
        "issuer": ISSUER,
        "jwks": {"keys": jwks},
        "hmac_issuer": HMAC_ISSUER,
        "hmac_secret": secret.decode(),
        "tokens": tokens,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors/interop.json")
