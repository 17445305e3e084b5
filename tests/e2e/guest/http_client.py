#!/usr/bin/env python3
"""Streamable HTTP MCP client (what Qwen Code's `httpUrl` uses), argument-driven, same options and
output as sse_client.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcp_common as c  # noqa: E402

a = c.parser(__doc__).parse_args()

try:  # mcp >= 1.2x / 2.x
    from mcp.client.streamable_http import streamable_http_client

    def transport():
        client = c.client_factory(a)(headers=c.headers(a))
        return streamable_http_client(a.url, http_client=client)
except ImportError:  # older 1.x
    from mcp.client.streamable_http import streamablehttp_client

    def transport():
        return streamablehttp_client(a.url, headers=c.headers(a), httpx_client_factory=c.client_factory(a))

c.main(transport, a)
