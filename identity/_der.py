"""The few facts trustmesh reads off an X.509 certificate, straight from its DER.

``cryptography`` parses every field of a certificate and costs a serving process ~10 MiB of
memory to import; a sidecar needs five facts of a leaf (serial, validity, URI SANs, whether it is
a CA, the public key's algorithm) and OpenSSL has already parsed and verified the chain by the
time a peer's leaf reaches us. So this is a reader of exactly those facts, strict in the way
that matters for identity: anything it does not understand (a malformed length, a duplicate
extension, trailing bytes) is an error, never a default. Callers turn that error into a refusal.

Structure read (RFC 5280 §4.1)::

    Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER, signature,
                                  issuer, validity SEQUENCE { notBefore, notAfter }, subject,
                                  subjectPublicKeyInfo, [1] [2] OPTIONAL, [3] extensions }
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

_SEQUENCE, _INTEGER, _BOOLEAN, _OID, _OCTETS = 0x30, 0x02, 0x01, 0x06, 0x04
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_CTX_VERSION, _CTX_EXTENSIONS, _SAN_URI = 0xA0, 0xA3, 0x86

_OID_SAN = bytes.fromhex("551d11")  # 2.5.29.17
_OID_BASIC_CONSTRAINTS = bytes.fromhex("551d13")  # 2.5.29.19
KEY_ALGORITHMS = {
    bytes.fromhex("2a8648ce3d0201"): "ec",  # 1.2.840.10045.2.1
    bytes.fromhex("2b6570"): "ed25519",  # 1.3.101.112
    bytes.fromhex("2a864886f70d010101"): "rsa",  # 1.2.840.113549.1.1.1
}


class DerError(ValueError):
    """The bytes are not a certificate this reader understands."""


@dataclass(frozen=True, slots=True)
class LeafFacts:
    serial_number: int
    not_before: float  # POSIX seconds
    not_after: float
    has_san: bool
    uris: tuple[str, ...]
    is_ca: bool
    key_algorithm: str  # "ec" | "ed25519" | "rsa" | "other"
    public_key_info: bytes  # the SubjectPublicKeyInfo DER, to compare keys by


def _read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at ``pos``; definite DER lengths only."""
    if pos + 2 > end:
        raise DerError("truncated element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DerError("unsupported or truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("non-minimal length")
        pos += count
    if pos + length > end:
        raise DerError("element runs past its container")
    return tag, pos, pos + length


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    found, start, stop = _read(data, pos, end)
    if found != tag:
        raise DerError(f"{what}: expected tag {tag:#x}, found {found:#x}")
    return start, stop


def _time(data: bytes, pos: int, end: int) -> tuple[float, int]:
    tag, start, stop = _read(data, pos, end)
    text = data[start:stop].decode("ascii", "strict")
    if tag == _UTC_TIME and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text  # RFC 5280 §4.1.2.5.1
    elif not (tag == _GENERALIZED_TIME and len(text) == 15 and text.endswith("Z")):
        raise DerError("validity time is not UTCTime or GeneralizedTime in Z form")
    if not text[:14].isdigit():
        raise DerError("validity time has non-digits")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]))
    clock = (int(text[8:10]), int(text[10:12]), int(text[12:14]))
    return float(calendar.timegm((*fields, *clock))), stop


def _children(data: bytes, start: int, stop: int):
    pos = start
    while pos < stop:
        tag, value_start, value_stop = _read(data, pos, stop)
        yield tag, value_start, value_stop
        pos = value_stop


def _san_uris(value: bytes) -> tuple[str, ...]:
    start, stop = _expect(value, 0, len(value), _SEQUENCE, "subjectAltName")
    if stop != len(value):
        raise DerError("subjectAltName has trailing bytes")
    uris = []
    for tag, value_start, value_stop in _children(value, start, stop):
        if tag == _SAN_URI:
            uris.append(value[value_start:value_stop].decode("ascii", "strict"))
    return tuple(uris)


def _is_ca(value: bytes) -> bool:
    start, stop = _expect(value, 0, len(value), _SEQUENCE, "basicConstraints")
    if stop != len(value):
        raise DerError("basicConstraints has trailing bytes")
    if start == stop:
        return False  # cA DEFAULT FALSE
    tag, value_start, value_stop = _read(value, start, stop)
    if tag != _BOOLEAN:
        return False  # only pathLenConstraint present
    if value_stop - value_start != 1:
        raise DerError("basicConstraints cA is not one byte")
    return value[value_start] != 0


def leaf_facts(der: bytes) -> LeafFacts:
    """Read a DER certificate's identity facts; raise :class:`DerError` if it does not parse."""
    try:
        return _leaf_facts(bytes(der))
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        if isinstance(exc, DerError):
            raise
        raise DerError(f"certificate does not parse: {exc}") from None


def _leaf_facts(der: bytes) -> LeafFacts:
    cert_start, cert_stop = _expect(der, 0, len(der), _SEQUENCE, "certificate")
    if cert_stop != len(der):
        raise DerError("certificate has trailing bytes")
    pos, tbs_stop = _expect(der, cert_start, cert_stop, _SEQUENCE, "tbsCertificate")
    tag, start, stop = _read(der, pos, tbs_stop)
    if tag == _CTX_VERSION:
        pos = stop
    start, stop = _expect(der, pos, tbs_stop, _INTEGER, "serialNumber")
    serial = int.from_bytes(der[start:stop], "big", signed=True)
    pos = stop
    _, _, pos = _read(der, pos, tbs_stop)  # signature algorithm
    _, _, pos = _read(der, pos, tbs_stop)  # issuer
    start, validity_stop = _expect(der, pos, tbs_stop, _SEQUENCE, "validity")
    not_before, after_pos = _time(der, start, validity_stop)
    not_after, _ = _time(der, after_pos, validity_stop)
    pos = validity_stop
    _, _, pos = _read(der, pos, tbs_stop)  # subject
    spki_pos = pos
    spki_start, spki_stop = _expect(der, pos, tbs_stop, _SEQUENCE, "subjectPublicKeyInfo")
    alg_start, alg_stop = _expect(der, spki_start, spki_stop, _SEQUENCE, "algorithm")
    oid_start, oid_stop = _expect(der, alg_start, alg_stop, _OID, "algorithm OID")
    key_algorithm = KEY_ALGORITHMS.get(der[oid_start:oid_stop], "other")
    public_key_info = der[spki_pos:spki_stop]
    pos = spki_stop
    extensions: dict[bytes, bytes] = {}
    while pos < tbs_stop:
        tag, start, stop = _read(der, pos, tbs_stop)
        pos = stop
        if tag != _CTX_EXTENSIONS:
            continue  # issuerUniqueID / subjectUniqueID
        seq_start, seq_stop = _expect(der, start, stop, _SEQUENCE, "extensions")
        for ext_tag, ext_start, ext_stop in _children(der, seq_start, seq_stop):
            if ext_tag != _SEQUENCE:
                raise DerError("extension is not a SEQUENCE")
            oid_start, oid_stop = _expect(der, ext_start, ext_stop, _OID, "extension OID")
            oid = der[oid_start:oid_stop]
            next_tag, value_start, value_stop = _read(der, oid_stop, ext_stop)
            if next_tag == _BOOLEAN:  # critical
                next_tag, value_start, value_stop = _read(der, value_stop, ext_stop)
            if next_tag != _OCTETS or value_stop != ext_stop:
                raise DerError("extension value is not an OCTET STRING")
            if oid in extensions:
                raise DerError("certificate repeats an extension")
            extensions[oid] = der[value_start:value_stop]
    san = extensions.get(_OID_SAN)
    basic = extensions.get(_OID_BASIC_CONSTRAINTS)
    return LeafFacts(
        serial_number=serial,
        not_before=not_before,
        not_after=not_after,
        has_san=san is not None,
        uris=_san_uris(san) if san is not None else (),
        is_ca=_is_ca(basic) if basic is not None else False,
        key_algorithm=key_algorithm,
        public_key_info=public_key_info,
    )
