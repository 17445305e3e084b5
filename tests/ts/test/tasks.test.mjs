// MCP tasks with the TypeScript SDK 1.x (issue 14). The SDK's own task API
// (client.experimental.tasks) speaks the 2025-11-25 experimental shapes (`capabilities.tasks`,
// `params.task`, `{task: {...}}`, tasks/result); sysom-mcp implements the
// `io.modelcontextprotocol/tasks` extension of the 2026-07-28 revision instead, which that API
// cannot parse. So: a client using the SDK's task API gets the plain tool result (the server
// advertises no 2025-11-25 tasks capability, so the SDK never asks for a task), and a client
// that declares the extension itself gets a task and follows it with plain requests, through
// another instance after the first is gone.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResultSchema } from "@modelcontextprotocol/sdk/types.js";

import { MockSysom, HttpServer, payload, UID, INSTANCE } from "../harness.mjs";

const TASKS = "io.modelcontextprotocol/tasks";
const ARGS = { uid: UID, region: "cn-hangzhou", channel: "ecs", instance: INSTANCE };
const KEY = "ts-task-test-key-0123456789abcdef0123456789";

async function client(server, capabilities) {
  const c = new Client({ name: "sysom-mcp-ts-tasks", version: "0" }, { capabilities });
  await c.connect(new StreamableHTTPClientTransport(server.url));
  return c;
}

describe("TypeScript SDK 1.x and MCP tasks", () => {
  let mock;
  const servers = [];
  const clients = [];
  let keyFile;

  before(async () => {
    mock = await MockSysom.start();
    keyFile = join(mkdtempSync(join(tmpdir(), "sysom-mcp-ts-keys-")), "task-keys");
    writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    for (const s of servers) await s.stop();
    mock?.stop();
  });

  beforeEach(() => mock.reset());

  async function start() {
    const server = await HttpServer.start(mock, { env: { SYSOM_MCP_TASK_KEY_FILE: keyFile } });
    servers.push(server);
    return server;
  }

  it("the SDK's 2025-11-25 task API is not offered a task and gets the plain result", async () => {
    await mock.scenario({ diagnosis: { polls_before_done: 2 } });
    const c = await client(await start(), { tasks: { requests: { tools: { call: {} } } } });
    clients.push(c);
    assert.equal(c.getServerCapabilities().tasks, undefined, "no 2025-11-25 tasks capability");
    assert.ok(c.getServerCapabilities().extensions?.[TASKS], "the extension is advertised");
    const { tools } = await c.listTools();
    assert.equal(tools.find((t) => t.name === "memgraph").execution?.taskSupport ?? "forbidden", "forbidden");
    const messages = [];
    for await (const m of c.experimental.tasks.callToolStream({ name: "memgraph", arguments: ARGS })) messages.push(m);
    assert.deepEqual(messages.map((m) => m.type), ["result"], JSON.stringify(messages));
    assert.equal(payload(messages[0].result).code, "Success");
    assert.equal((await mock.requests("InvokeDiagnosis")).length, 1);
  });

  it("declaring the extension, a task created on one instance completes on another after the first stops", async () => {
    await mock.scenario({ diagnosis: { polls_before_done: 3 } });
    const [a, b] = [await start(), await start()];
    const onA = await client(a, { extensions: { [TASKS]: {} } });
    const onB = await client(b, { extensions: { [TASKS]: {} } });
    clients.push(onA, onB);
    const created = await onA.request({ method: "tools/call", params: { name: "memgraph", arguments: ARGS } }, ResultSchema);
    assert.equal(created.resultType, "task", JSON.stringify(created));
    assert.equal(created.status, "working");
    await onA.close();
    await a.stop();
    let state;
    for (let i = 0; i < 200; i++) {
      state = await onB.request({ method: "tasks/get", params: { taskId: created.taskId } }, ResultSchema);
      if (state.status !== "working") break;
      await sleep(Math.min(state.pollIntervalMs ?? 100, 100));
    }
    assert.equal(state.status, "completed", JSON.stringify(state));
    assert.equal(payload(state.result).code, "Success");
    assert.equal((await mock.requests("InvokeDiagnosis")).length, 1, "one upstream task only");
  });

  it("a tampered handle is refused by tasks/get", async () => {
    await mock.scenario({ diagnosis: { polls_before_done: 3 } });
    const c = await client(await start(), { extensions: { [TASKS]: {} } });
    clients.push(c);
    const created = await c.request({ method: "tools/call", params: { name: "memgraph", arguments: ARGS } }, ResultSchema);
    const parts = created.taskId.split(".");
    const sig = parts[parts.length - 1];
    parts[parts.length - 1] = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
    await assert.rejects(
      c.request({ method: "tasks/get", params: { taskId: parts.join(".") } }, ResultSchema),
      /not issued by this service/);
  });
});
