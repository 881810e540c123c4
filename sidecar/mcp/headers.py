"""Protocol 2026-07-28 request headers that mirror the body (SEP-2243).

``docs/specification/2026-07-28/basic/transports/streamable-http.mdx``, "Request Metadata":
every POST carries ``Mcp-Method`` (= ``method``); ``tools/call`` and ``prompts/get`` carry
``Mcp-Name`` (= ``params.name``) and ``resources/read`` carries it (= ``params.uri``). A value that
is not plain header-safe ASCII is sent as ``=?base64?<base64 of UTF-8>?=`` (markers lower-case and
exact); a server MUST decode before comparing, and MUST answer a missing, malformed or mismatched
header with 400 and JSON-RPC -32020 (``HeaderMismatch``). The reason is the differential "a load
balancer routes on the header, the server executes the body", so trustmesh checks the headers and
then decides on the body only.

Our rules, where the spec is silent: a header that is present is checked whatever the protocol
version (a gateway in front of us may route on it); ``Mcp-Name`` on a method that has no mirrored
member is a mismatch; notification POSTs need ``Mcp-Method`` only if they carry it (the revision
"defines no header requirements for notification POSTs"); ``Mcp-Method`` itself is never
base64-encoded. Header names arrive lower-cased.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from . import jsonrpc
from .errors import McpRequestRejected
from .methods import HEADERS_REQUIRED_FROM

_PREFIX, _SUFFIX = "=?base64?", "?="
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
# Method → the params member Mcp-Name mirrors (the spec's "Standard Request Headers" table).
NAME_SOURCES = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class HeaderMismatch(McpRequestRejected):
    code = "ERR_MCP_HEADER_MISMATCH"
    jsonrpc_code = jsonrpc.HEADER_MISMATCH


# RFC 9110 field-value characters: visible ASCII, space and tab.
_PLAIN = re.compile("[\t -~]*")


def _plain_ok(value: str) -> bool:
    return _PLAIN.fullmatch(value) is not None


def decode_header_value(header: str, value: str, *, allow_base64: bool) -> str:
    """The text a mirrored header carries, or ``HeaderMismatch`` if it is malformed."""
    if allow_base64 and value.startswith(_PREFIX) and value.endswith(_SUFFIX):
        encoded = value[len(_PREFIX) : len(value) - len(_SUFFIX)]
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise HeaderMismatch(f"Header mismatch: {header} has an invalid base64 value") from exc
    if not _plain_ok(value):
        raise HeaderMismatch(
            f"Header mismatch: {header} contains characters not allowed in a header"
        )
    return value


def check_mirrored_headers(
    message: Mapping[str, Any], *, is_request: bool, version: str, headers: Mapping[str, str]
) -> None:
    """Raise ``HeaderMismatch`` unless ``Mcp-Method``/``Mcp-Name`` agree with ``message``."""
    required = version >= HEADERS_REQUIRED_FROM and is_request
    method = message.get("method")
    raw_method = headers.get("mcp-method")
    if raw_method is None:
        if required:
            raise HeaderMismatch("Header mismatch: required header Mcp-Method is missing")
    else:
        header_method = decode_header_value("Mcp-Method", raw_method, allow_base64=False)
        if header_method != method:
            raise HeaderMismatch(
                f"Header mismatch: Mcp-Method header value {header_method!r} does not match "
                f"body value {method!r}"
            )

    source = NAME_SOURCES.get(method) if isinstance(method, str) else None
    raw_name = headers.get("mcp-name")
    if raw_name is None:
        if required and source is not None:
            raise HeaderMismatch(
                f"Header mismatch: required header Mcp-Name is missing for {method}"
            )
    else:
        if source is None:
            raise HeaderMismatch(f"Header mismatch: Mcp-Name is not expected for {method!r}")
        header_name = decode_header_value("Mcp-Name", raw_name, allow_base64=True)
        params = message.get("params")
        body_name = params.get(source) if isinstance(params, dict) else None
        if header_name != body_name:
            raise HeaderMismatch(
                f"Header mismatch: Mcp-Name header value {header_name!r} does not match "
                f"body value {body_name!r}"
            )

    header_version = headers.get("mcp-protocol-version")
    if version >= HEADERS_REQUIRED_FROM and header_version is not None:
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        body_version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
        if body_version is not None and body_version != header_version:
            raise HeaderMismatch(
                "Header mismatch: MCP-Protocol-Version header does not match "
                f"_meta[{PROTOCOL_VERSION_META!r}]"
            )
