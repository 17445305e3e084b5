"""Shared bits of the e2e MCP clients: argument parsing, an httpx client factory (TLS options),
and the session actions (list tools, call a tool with progress, hold a session open).

Works with the `mcp` Python SDK 1.x (httpx, `streamablehttp_client`) and 2.x (httpx2,
`streamable_http_client(url, http_client=...)`)."""

import argparse
import asyncio
import json
import os
import sys
import time

try:  # mcp >= 2 uses httpx2
    import httpx2 as httpx
except ImportError:  # mcp 1.x
    import httpx

from mcp import ClientSession


def out(obj):
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def parser(desc):
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--url", required=True)
    p.add_argument("--token", help="bearer token (Authorization header)")
    p.add_argument("--cafile", help="CA bundle to verify the server certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--list", action="store_true", help="list tools")
    p.add_argument("--expect-tools", type=int, help="fail unless tools/list returns this many tools")
    p.add_argument("--call", help="tool to call")
    p.add_argument("--args", default="{}", help="tool arguments as JSON")
    p.add_argument("--repeat", type=int, default=1, help="call the tool this many times")
    p.add_argument("--min-progress", type=int, default=0,
                   help="fail unless each call gets at least this many progress notifications")
    p.add_argument("--ready-file", help="after the first round, create this file ...")
    p.add_argument("--go-file", help="... then wait for this file and do the calls again on the same session")
    p.add_argument("--timeout", type=float, default=240, help="overall timeout in seconds")
    p.add_argument("--save", help="write the structured result of the last call to this file (JSON)")
    return p


def verify_opt(a):
    if a.insecure:
        return False
    if a.cafile:
        return a.cafile
    return True


def headers(a):
    return {"Authorization": f"Bearer {a.token}"} if a.token else None


def client_factory(a):
    """An McpHttpClientFactory (headers, timeout, auth) honouring --cafile/--insecure."""

    def factory(headers=None, timeout=None, auth=None):
        kw = {"headers": headers, "follow_redirects": True, "verify": verify_opt(a)}
        kw["timeout"] = timeout if timeout is not None else httpx.Timeout(30.0, read=300.0)
        if auth is not None:
            kw["auth"] = auth
        return httpx.AsyncClient(**kw)

    return factory


async def run_round(session, a, label):
    ok = True
    if a.list:
        t0 = time.monotonic()
        tools = await session.list_tools()
        names = [t.name for t in tools.tools]
        good = a.expect_tools is None or len(names) == a.expect_tools
        ok &= good
        out({"round": label, "op": "tools/list", "count": len(names), "names": names, "ok": good,
             "secs": round(time.monotonic() - t0, 3)})
    if a.call:
        args = json.loads(a.args)
        for i in range(a.repeat):
            progress = []

            async def on_progress(p, total, message=None, _acc=progress):
                _acc.append({"progress": p, "total": total, "message": message})

            t0 = time.monotonic()
            res = await session.call_tool(a.call, args, progress_callback=on_progress)
            is_error = bool(getattr(res, "isError", False) or getattr(res, "is_error", False))
            texts = [c.text for c in getattr(res, "content", []) if getattr(c, "type", "") == "text"]
            structured = getattr(res, "structuredContent", None) or getattr(res, "structured_content", None)
            good = (not is_error) and len(progress) >= a.min_progress
            if a.save:
                with open(a.save, "w") as f:
                    json.dump(structured if structured is not None else {"isError": is_error, "texts": texts},
                              f, ensure_ascii=False)
            ok &= good
            out({"round": label, "op": "tools/call", "tool": a.call, "i": i, "isError": is_error,
                 "progress": len(progress), "ok": good, "secs": round(time.monotonic() - t0, 3),
                 "text": (texts[0][:400] if texts else None),
                 "structured": (json.dumps(structured, ensure_ascii=False)[:400] if structured else None)})
    return ok


async def drive(open_transport, a):
    async with open_transport() as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            info = getattr(init, "serverInfo", None) or getattr(init, "server_info", None)
            out({"op": "initialize", "server": getattr(info, "name", None),
                 "version": getattr(info, "version", None),
                 "protocol": getattr(init, "protocolVersion", None) or getattr(init, "protocol_version", None)})
            ok = await run_round(session, a, "first")
            if a.ready_file:
                with open(a.ready_file, "w") as f:
                    f.write(str(os.getpid()))
                out({"op": "hold", "waiting_for": a.go_file})
                while a.go_file and not os.path.exists(a.go_file):
                    await asyncio.sleep(0.2)
                ok &= await run_round(session, a, "second")
            return ok


def main(open_transport, a):
    try:
        ok = asyncio.run(asyncio.wait_for(drive(open_transport, a), a.timeout))
    except BaseException as e:  # report and fail; ExceptionGroup from anyio included
        detail = repr(e)
        for sub in getattr(e, "exceptions", []) or []:
            detail += " | " + repr(sub)
        out({"op": "error", "error": detail[:2000]})
        sys.exit(1)
    out({"op": "done", "ok": ok})
    sys.exit(0 if ok else 1)
