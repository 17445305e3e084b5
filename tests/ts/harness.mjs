// Shared pieces of the TypeScript SDK client tests: the mock SysOM, sysom-mcp itself (HTTP or
// stdio), and SDK clients over each transport. Every process started here is stopped by stop().
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { mkdtempSync, readFileSync, writeFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BINARY = process.env.SYSOM_MCP_BIN || join(REPO_ROOT, "target", "debug", "sysom-mcp");
const PYTHON = process.env.PYTHON || "python3";
export const MCP_PATH = "/mcp/unified";
export const UID = "1234567890123456";
export const INSTANCE = "i-bp1mocktestinstance01";
export const ACCESS_KEY_ID = "AKIDmocktest";
export const ACCESS_KEY_SECRET = "mock-secret";

/** The 21 tools of the original server (local tools may come on top). */
export const ORIGINAL_TOOLS = [
  "list_all_instances", "list_pods_of_instance", "list_clusters", "list_instances",
  "memgraph", "javamem", "oomcheck", "iofsstat", "iodiagnose", "packetdrop", "netjitter", "delay",
  "loadtask", "vmcore", "diskanalysis",
  "create_vmcore_diagnosis_task", "create_dmesg_diagnosis_task", "query_diagnosis_task",
  "list_history_tasks", "initial_sysom", "check_sysom_initialed",
];

export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/** Waits until `predicate()` returns a truthy value (bounded), returning it. */
export async function waitFor(predicate, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** tests/mock_sysom/mock_sysom.py on a free loopback port, steered over its control API. */
export class MockSysom {
  static async start() {
    const proc = spawn(PYTHON, [join(REPO_ROOT, "tests", "mock_sysom", "mock_sysom.py"), "--host", "127.0.0.1",
      "--port", "0", "--access-key-id", ACCESS_KEY_ID, "--access-key-secret", ACCESS_KEY_SECRET],
    { stdio: ["ignore", "pipe", "inherit"] });
    let buffered = "";
    const port = await new Promise((ok, fail) => {
      proc.stdout.on("data", (chunk) => {
        buffered += chunk;
        const m = buffered.match(/MOCK_SYSOM_PORT=(\d+)/);
        if (m) ok(Number(m[1]));
      });
      proc.on("exit", (code) => fail(new Error(`mock_sysom exited rc=${code}`)));
    });
    return new MockSysom(proc, `http://127.0.0.1:${port}`);
  }

  constructor(proc, url) {
    this.proc = proc;
    this.url = url;
  }

  async control(method, path, body) {
    const resp = await fetch(this.url + path, {
      method, headers: { "content-type": "application/json" }, body: body && JSON.stringify(body),
    });
    if (!resp.ok) throw new Error(`mock ${method} ${path}: ${resp.status} ${await resp.text()}`);
    return resp.json();
  }

  scenario(patch) { return this.control("POST", "/__mock/scenario", patch); }
  reset() { return this.control("POST", "/__mock/reset", {}); }
  async requests(action) {
    const all = await this.control("GET", "/__mock/requests");
    return all.filter((r) => r.kind === "openapi" && (!action || r.action === action));
  }

  stop() { this.proc.kill("SIGTERM"); }
}

/** The environment sysom-mcp runs with: only what we set, every upstream at the mock. */
export function serverEnv(mock, overrides = {}) {
  return {
    PATH: process.env.PATH, HOME: process.env.HOME || "/tmp", LANG: "C.UTF-8",
    SYSOM_MCP_POLL_INTERVAL_MS: "50", SYSOM_MCP_DIAGNOSIS_TIMEOUT: "30",
    SYSOM_MCP_LOG: "stderr", RUST_LOG: "info",
    SYSOM_ENDPOINT: mock.url, SYSOM_STS_ENDPOINT: mock.url, SYSOM_ECS_METADATA_ENDPOINT: mock.url,
    ACCESS_KEY_ID, ACCESS_KEY_SECRET,
    ...overrides,
  };
}

/** `sysom-mcp --sse` on a free loopback port; its stderr goes to a file for log assertions. */
export class HttpServer {
  static async start(mock, { args = [], env = {} } = {}) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "sysom-mcp-ts-"));
    const config = join(dir, "config.toml");
    writeFileSync(config, "# empty\n");
    const logPath = join(dir, "stderr.log");
    const proc = spawn(BINARY, ["--sse", "--host", "127.0.0.1", "--port", String(port), "--config", config, ...args],
      { env: serverEnv(mock, env), stdio: ["ignore", "ignore", openSync(logPath, "w")] });
    const server = new HttpServer(proc, port, logPath);
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error(`sysom-mcp exited rc=${proc.exitCode}:\n${server.log()}`);
      try {
        return (await fetch(`${server.base}/healthz`)).ok;
      } catch {
        return false;
      }
    }, "/healthz");
    return server;
  }

  constructor(proc, port, logPath) {
    this.proc = proc;
    this.port = port;
    this.logPath = logPath;
    this.base = `http://127.0.0.1:${port}`;
    this.url = new URL(this.base + MCP_PATH);
  }

  log() { return readFileSync(this.logPath, "utf8"); }

  async stop() {
    if (this.proc.exitCode !== null) return;
    this.proc.kill("SIGTERM");
    await once(this.proc, "exit");
  }
}

/**
 * Connects an SDK client over `kind` ("streamable", "sse" or "stdio"); returns the client and a
 * function giving the server's log so far. HTTP kinds use `server`; stdio spawns its own process.
 */
export async function connect(kind, { server, mock, env = {} } = {}) {
  const client = new Client({ name: "sysom-mcp-ts-tests", version: "0" });
  let transport;
  let log;
  if (kind === "streamable") {
    transport = new StreamableHTTPClientTransport(server.url);
    log = () => server.log();
  } else if (kind === "sse") {
    transport = new SSEClientTransport(server.url);
    log = () => server.log();
  } else {
    transport = new StdioClientTransport({ command: BINARY, args: ["--stdio"], env: serverEnv(mock, env), stderr: "pipe" });
    let stderr = "";
    transport.stderr.on("data", (chunk) => { stderr += chunk; });
    log = () => stderr;
  }
  await client.connect(transport);
  return { client, log };
}

/** The JSON text content of a tool result, checked equal to structuredContent when present. */
export function payload(result) {
  const texts = result.content.filter((c) => c.type === "text").map((c) => c.text);
  if (texts.length !== 1) throw new Error(`expected one text item, got ${JSON.stringify(result.content)}`);
  const parsed = JSON.parse(texts[0]);
  if (result.structuredContent !== undefined) {
    const same = JSON.stringify(result.structuredContent) === JSON.stringify(parsed);
    if (!same) throw new Error("structuredContent differs from the JSON text");
  }
  return parsed;
}
