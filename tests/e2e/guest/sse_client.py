#!/usr/bin/env python3
"""The deployment guide's Python example (3.2): `sse_client(url)` + `ClientSession`, plus a bearer
header, argument-driven. Prints one JSON object per line; exit 0 when every check passed.

  sse_client.py --url http://127.0.0.1:7140/mcp/unified --token T --list --expect-tools 21 \
      --call memgraph --args '{"uid":"123","region":"cn-hangzhou","channel":"ecs","instance":"i-xxx"}' \
      --min-progress 1
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcp_common as c  # noqa: E402
from mcp.client.sse import sse_client  # noqa: E402  (the guide's import)

a = c.parser(__doc__).parse_args()


def transport():
    return sse_client(a.url, headers=c.headers(a), httpx_client_factory=c.client_factory(a))


c.main(transport, a)
