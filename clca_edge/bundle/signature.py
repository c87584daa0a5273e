"""Signed bundles: an Ed25519 signature (``cryptography``) over what the deploy machine wrote.

A sha256 list only catches accidents: whoever can edit a file can edit the manifest too. With a
signature, a device that trusts a set of public keys (``--trusted-keys DIR``, or the environment
variable ``CLCA_EDGE_TRUSTED_KEYS`` the systemd unit sets) refuses a bundle that is unsigned, signed
by another key, or changed after signing.

What is signed (``payload``): the manifest as deploy wrote it, minus the engine keys
(``manifest.ENGINE_KEYS``: engines, their failures, the default engine, Torch-TensorRT modules, and
the ``files`` hashes of the plans), plus the sha256 of every file deploy wrote. Deploy on a Jetson
records the bundle's own engines after signing it, and bundles signed before engines moved to the
device cache may hold engines an older build-engine added on the device: both keep their signature
valid. (build-engine now writes into the device's cache, never into a bundle.) Every deploy-written
file (the ONNX variants, labels, preprocessing, reference samples, calibration list) is covered
through its hash, which ``store.verify_files`` checks against the bytes on load. Engines are a
device's own output: they are keyed to the device and re-checked by the device self-check, not signed.

The manifest is read as plain JSON, not through the typed schema, and canonicalised (sorted keys,
numbers as floats, null members dropped), so a read/modify/write that re-serialises it (deploy
adding its engines) does not change what was signed. ``manifest.sig`` (JSON, next to the manifest, not listed in its
``files``) holds the key id, the excluded keys and the signed file list (both inside the signed
payload too, so neither can be edited) and the signature.

Keys are PEM files: ``clca-edge keygen`` writes ``clca-edge.key`` (PKCS#8, unencrypted, mode 0600:
keep it on the deploy machine) and ``clca-edge.pub`` (SubjectPublicKeyInfo: copy it into the
device's trusted-keys folder). Torch-free; imports only ``core`` and ``bundle.store``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ..core.errors import TrustError
from ..core.atomic_io import atomic_write_bytes
from ..core.output_paths import make_dirs
from .manifest import ENGINE_KEYS, MANIFEST_NAME

SIGNATURE_NAME = "manifest.sig"
SIGNATURE_FORMAT = 1
ALGORITHM = "ed25519"
PRIVATE_KEY_NAME = "clca-edge.key"
PUBLIC_KEY_NAME = "clca-edge.pub"
TRUSTED_KEYS_ENV = "CLCA_EDGE_TRUSTED_KEYS"


def _serialization():
    import warnings

    try:
        with warnings.catch_warnings():
            # cryptography 47 (the last for Python 3.8, JetPack 5's) warns on import that 3.8 is
            # deprecated: noise on every device start, not something the operator can act on.
            warnings.filterwarnings("ignore", message=".*Python 3.8 is no longer supported.*")
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # a base dependency; only a broken install lacks it
        raise TrustError(f"bundle signatures need the 'cryptography' package ({e}); pip install cryptography") from None
    return serialization, ed25519


# ------------------------------------------------------------------------------ keys
def key_id(public_key) -> str:
    """16 hex digits of the sha256 of the raw 32-byte public key: names a key in messages."""
    serialization, _ = _serialization()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: Union[str, Path], force: bool = False) -> Tuple[Path, Path, str]:
    """Write ``clca-edge.key`` (0600) and ``clca-edge.pub`` into ``out_dir``; returns (private,
    public, key id). Existing files are only replaced with ``force``."""
    serialization, ed25519 = _serialization()
    out = Path(out_dir)
    priv_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    existing = [str(p) for p in (priv_path, pub_path) if p.exists()]
    if existing and not force:
        raise TrustError(f"{', '.join(existing)} already exist(s); pass --force to replace the key pair "
                         "(bundles signed with the old key then no longer verify on devices that trust only the new one)")
    make_dirs(out, "--out")  # a file there, or no permission: one OutputError line (exit 11)
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # Created 0600 from the start (no window in which another user could read it).
        if priv_path.exists():
            priv_path.unlink()
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        os.chmod(priv_path, 0o600)  # even under an unusual umask
        atomic_write_bytes(pub_path, public)
    except OSError as e:
        raise TrustError(f"cannot write the key pair into {out} ({e.strerror}); choose a writable --out") from None
    return priv_path, pub_path, key_id(key.public_key())


def load_private_key(path: Union[str, Path]):
    """An Ed25519 private key from a PEM file; a one-line TrustError naming the file otherwise."""
    serialization, ed25519 = _serialization()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrustError(f"signing key {path} cannot be read ({e.strerror}); give the clca-edge.key "
                         "written by `clca-edge keygen`") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TrustError(f"signing key {path} is encrypted; clca-edge signs with unencrypted keys "
                         "(protect the file with its permissions) -- make one with `clca-edge keygen`") from None
    except ValueError:
        raise TrustError(f"signing key {path} is not a PEM private key; give the clca-edge.key written by "
                         "`clca-edge keygen` (not the .pub)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TrustError(f"signing key {path} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key; "
                         "make one with `clca-edge keygen`")
    return key


def _load_public_key(path: Path):
    serialization, ed25519 = _serialization()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrustError(f"trusted key {path} cannot be read ({e.strerror}); fix its permissions or remove it") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise TrustError(f"trusted key {path} is not a PEM public key; put only the clca-edge.pub files "
                         "written by `clca-edge keygen` in the trusted-keys folder") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TrustError(f"trusted key {path} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key; "
                         "use a key made by `clca-edge keygen`")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a device accepts bundle signatures from, by key id."""

    source: Path
    keys: Dict[str, Any]

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrustedKeys":
        """Every ``*.pub`` in the folder ``path`` (or the one file ``path``). A folder with no
        public key, or any key that does not load, is an error naming it: a device configured to
        trust keys never silently trusts nothing or accepts everything."""
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".pub" and not p.name.startswith("."))
            if not files:
                raise TrustError(f"trusted-keys folder {path} holds no .pub file; copy the clca-edge.pub of "
                                 "the deploy machine there (clca-edge keygen)")
        elif path.is_file():
            files = [path]
        else:
            raise TrustError(f"trusted keys {path} does not exist; create the folder and copy the deploy "
                             f"machine's clca-edge.pub into it (or unset --trusted-keys / {TRUSTED_KEYS_ENV})")
        keys = {}
        for f in files:
            k = _load_public_key(f)
            keys[key_id(k)] = k
        return cls(path, keys)


# ------------------------------------------------------------------------------ payload
def _canonical(value: Any) -> Any:
    """Numbers as floats, null members dropped, recursively: what a typed re-serialisation may
    change (1 -> 1.0, an absent optional -> null or the reverse) does not count."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def payload(manifest: Dict[str, Any], signed_files: Iterable[str], unsigned_keys: Iterable[str]) -> bytes:
    """The bytes the signature covers (see the module docstring)."""
    unsigned = sorted(set(unsigned_keys))
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    body = {k: v for k, v in manifest.items() if k not in unsigned}
    # A signed file missing from the manifest now: None here, so the payload (and check) differs.
    body["files"] = {rel: files.get(rel) for rel in sorted(set(signed_files))}
    doc = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "unsigned_keys": unsigned, "manifest": body}
    return json.dumps(_canonical(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _read_manifest_json(root: Path) -> Dict[str, Any]:
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise TrustError(f"{path} cannot be read for its signature ({e})") from None
    if not isinstance(data, dict):
        raise TrustError(f"{path} is not a bundle manifest (not a JSON object)")
    return data


# ------------------------------------------------------------------------------ sign / verify
@dataclass(frozen=True)
class SignatureInfo:
    key_id: str
    signed_files: Tuple[str, ...]


def sign_bundle(root: Union[str, Path], private_key_path: Union[str, Path]) -> SignatureInfo:
    """Sign the bundle folder ``root`` as written (call after its manifest is final): every file the
    manifest lists is covered, the device-writable keys are not. Writes ``manifest.sig``."""
    root = Path(root)
    key = load_private_key(private_key_path)
    manifest = _read_manifest_json(root)
    signed_files = sorted(manifest.get("files") or {})
    unsigned = sorted(ENGINE_KEYS)
    signature = key.sign(payload(manifest, signed_files, unsigned))
    kid = key_id(key.public_key())
    doc = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "key_id": kid, "unsigned_keys": unsigned,
           "signed_files": signed_files, "signature": base64.b64encode(signature).decode("ascii")}
    atomic_write_bytes(root / SIGNATURE_NAME, json.dumps(doc, indent=1).encode())
    return SignatureInfo(kid, tuple(signed_files))


def _read_signature(root: Path, where: str) -> Dict[str, Any]:
    path = root / SIGNATURE_NAME
    if not path.is_file():
        raise TrustError(f"bundle {where} is not signed (no {SIGNATURE_NAME}) and this device only runs bundles "
                         "signed by a trusted key; re-deploy with --sign-key, or unset --trusted-keys / "
                         f"{TRUSTED_KEYS_ENV}")
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise TrustError(f"bundle {where}: {SIGNATURE_NAME} is unreadable ({e}); copy the bundle again") from None
    ok = (isinstance(doc, dict) and doc.get("format") == SIGNATURE_FORMAT and doc.get("algorithm") == ALGORITHM
          and isinstance(doc.get("key_id"), str) and isinstance(doc.get("signature"), str)
          and isinstance(doc.get("signed_files"), list) and all(isinstance(f, str) for f in doc["signed_files"])
          and isinstance(doc.get("unsigned_keys"), list) and all(isinstance(k, str) for k in doc["unsigned_keys"]))
    if not ok:
        raise TrustError(f"bundle {where}: {SIGNATURE_NAME} is not a clca-edge {ALGORITHM} signature of format "
                         f"{SIGNATURE_FORMAT}; re-deploy with --sign-key")
    return doc


def verify_bundle(root: Union[str, Path], trusted: TrustedKeys, where: Optional[str] = None) -> SignatureInfo:
    """Raise TrustError unless ``root``'s manifest carries a valid signature by a trusted key over
    what deploy wrote, and every file deploy wrote is still listed with its signed hash (the file
    bytes themselves are checked against those hashes by ``store.verify_files``)."""
    _serialization()  # imports cryptography quietly (see there)
    from cryptography.exceptions import InvalidSignature

    root = Path(root)
    where = where or str(root)
    doc = _read_signature(root, where)
    unsigned = set(doc["unsigned_keys"])
    if not unsigned <= set(ENGINE_KEYS):
        extra = ", ".join(sorted(unsigned - set(ENGINE_KEYS)))
        raise TrustError(f"bundle {where}: its signature leaves out {extra}, which only deploy writes; "
                         "refused (re-deploy with --sign-key)")
    key = trusted.keys.get(doc["key_id"])
    if key is None:
        known = ", ".join(sorted(trusted.keys)) or "none"
        raise TrustError(f"bundle {where} is signed by key {doc['key_id']}, which is not among the trusted keys in "
                         f"{trusted.source} ({known}); add its clca-edge.pub there or re-deploy with a trusted key")
    manifest = _read_manifest_json(root)
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
        key.verify(signature, payload(manifest, doc["signed_files"], unsigned))
    except (InvalidSignature, ValueError):
        raise TrustError(f"bundle {where}: the signature by key {doc['key_id']} does not verify: the manifest or "
                         "the files it lists changed after signing (tampered with, or edited); refused. "
                         "Copy the bundle again from the deploy machine") from None
    return SignatureInfo(doc["key_id"], tuple(doc["signed_files"]))


def sign_bytes(private_key_path: Union[str, Path], data: bytes) -> Tuple[str, str]:
    """(key id, base64 Ed25519 signature) of ``data`` with the PEM key at ``private_key_path``: the
    same keys and key ids as bundles, for other signed documents (a fleet announcement)."""
    key = load_private_key(private_key_path)
    return key_id(key.public_key()), base64.b64encode(key.sign(data)).decode("ascii")


def own_keys(private_key_path: Union[str, Path]) -> TrustedKeys:
    """The public half of the PEM key at ``private_key_path`` as TrustedKeys: what the signer itself
    checks its own earlier signatures against (the centre, before re-signing what it finds retained)."""
    key = load_private_key(private_key_path).public_key()
    return TrustedKeys(Path(private_key_path), {key_id(key): key})


def verify_bytes(trusted: TrustedKeys, kid: str, signature_b64: str, data: bytes, what: str) -> None:
    """Raise TrustError (naming ``what``) unless ``signature_b64`` is a signature of ``data`` by the
    trusted key ``kid``."""
    _serialization()
    from cryptography.exceptions import InvalidSignature

    key = trusted.keys.get(kid)
    if key is None:
        known = ", ".join(sorted(trusted.keys)) or "none"
        raise TrustError(f"{what} is signed by key {kid}, which is not among the trusted keys in {trusted.source} "
                         f"({known})")
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        raise TrustError(f"{what}: the signature by key {kid} does not verify (changed after signing); refused") from None


def trusted_keys_from(value: Optional[Union[str, Path]]) -> Optional[TrustedKeys]:
    """``--trusted-keys`` (or the environment variable, resolved by the CLI) -> TrustedKeys; None
    or an empty value: signatures are not required."""
    if value is None or str(value).strip() == "":
        return None
    return TrustedKeys.load(value)


__all__ = ["ALGORITHM", "PRIVATE_KEY_NAME", "PUBLIC_KEY_NAME", "SIGNATURE_NAME", "SignatureInfo", "TRUSTED_KEYS_ENV",
           "TrustedKeys", "generate_keypair", "key_id", "load_private_key", "payload", "sign_bundle", "sign_bytes",
           "trusted_keys_from", "verify_bundle", "verify_bytes"]
