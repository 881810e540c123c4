"""The MCP layer reads request fields from ``mcp_fields`` (a plain dict of the fields it names);
a field read anywhere in that layer but missing from ``MCP_FIELDS`` would always look absent,
which could let a request through unchecked. This guard reads the source for every literal
field name looked up on request headers and requires it to be listed."""

from __future__ import annotations

import re
from pathlib import Path

import sidecar
from sidecar.proxy.mcp_route import MCP_FIELDS

ROOT = Path(sidecar.__file__).parent
SOURCES = [*sorted((ROOT / "mcp").glob("*.py")), ROOT / "proxy" / "mcp_route.py"]
# headers.get("x"  headers["x"]  "x" in headers  (also fields / ctx.headers)
READS = [
    re.compile(r"""(?:headers|fields|mcp_fields\(\w+\))\.get\(\s*["']([a-z0-9-]+)["']"""),
    re.compile(r"""(?:headers|fields)\[\s*["']([a-z0-9-]+)["']\s*\]"""),
    re.compile(r"""["']([a-z0-9-]+)["']\s+(?:not\s+)?in\s+(?:ctx\.)?(?:headers|fields)\b"""),
]


def test_every_request_field_the_mcp_layer_reads_is_in_mcp_fields():
    read = {}
    for path in SOURCES:
        text = path.read_text()
        for pattern in READS:
            for name in pattern.findall(text):
                read.setdefault(name, path.name)
    assert {"mcp-method", "mcp-name", "mcp-session-id"} <= read.keys()  # the guard sees reads
    missing = {name: where for name, where in read.items() if name.encode() not in MCP_FIELDS}
    assert not missing, f"fields read but not in MCP_FIELDS: {missing}"
