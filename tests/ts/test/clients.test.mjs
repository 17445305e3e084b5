// sysom-mcp against the official TypeScript SDK client (the one behind Claude Code, Cursor, VS Code
// and the MCP Inspector) over each transport it offers: Streamable HTTP, legacy SSE and stdio.
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";

import {
  MockSysom, HttpServer, connect, payload, waitFor, ORIGINAL_TOOLS, UID, INSTANCE,
} from "../harness.mjs";

const DIAGNOSIS_ARGS = { uid: UID, region: "cn-hangzhou", channel: "ecs", instance: INSTANCE };

for (const kind of ["streamable", "sse", "stdio"]) {
  describe(`TypeScript SDK over ${kind}`, () => {
    let mock;
    let server;
    let client;
    let log;

    before(async () => {
      mock = await MockSysom.start();
      if (kind !== "stdio") server = await HttpServer.start(mock);
      ({ client, log } = await connect(kind, { server, mock }));
    });

    after(async () => {
      await client?.close();
      await server?.stop();
      mock?.stop();
    });

    beforeEach(() => mock.reset());

    it("lists every tool, each accepted by the SDK's schema validation", async () => {
      // listTools() parses the answer with the SDK's Zod schemas: a boolean subschema anywhere
      // in an input or output schema makes it throw, and the client sees no tool at all.
      const { tools } = await client.listTools();
      const names = tools.map((t) => t.name);
      for (const name of ORIGINAL_TOOLS) assert.ok(names.includes(name), `${name} missing from ${names}`);
      for (const tool of tools) {
        assert.equal(tool.inputSchema.type, "object", tool.name);
        assert.equal(tool.outputSchema?.type, "object", `${tool.name} outputSchema`);
      }
    });

    it("calls a tool against the mock and gets the envelope as structured content", async () => {
      await client.listTools(); // the SDK validates structuredContent against the listed outputSchema
      const result = await client.callTool({ name: "list_all_instances", arguments: { uid: UID } });
      assert.notEqual(result.isError, true);
      const envelope = payload(result);
      assert.equal(envelope.code, "Success");
      assert.equal((await mock.requests("ListAllInstances")).length, 1);
    });

    it("reports a bad argument as a tool error naming it", async () => {
      const result = await client.callTool({
        name: "memgraph", arguments: { uid: UID, region: 5, channel: "ecs", instance: INSTANCE },
      });
      assert.equal(result.isError, true);
      assert.match(result.content[0].text, /`region`/);
      assert.equal((await mock.requests("InvokeDiagnosis")).length, 0);
    });

    it("sends progress notifications during a slow diagnosis", async () => {
      await mock.scenario({ diagnosis: { polls_before_done: 4 } });
      const progress = [];
      const result = await client.callTool({ name: "memgraph", arguments: DIAGNOSIS_ARGS }, undefined, {
        onprogress: (p) => progress.push(p),
      });
      assert.equal(payload(result).code, "Success");
      assert.ok(progress.length >= 1, "no progress notification arrived");
      assert.ok(progress.every((p) => typeof p.progress === "number" && p.total > 0), JSON.stringify(progress));
      assert.match(progress[0].message, /memgraph task/);
    });

    it("cancels a running diagnosis: the call rejects and the server stops polling", async () => {
      await mock.scenario({ diagnosis: { final: "never" } });
      const abort = new AbortController();
      let progressed = 0;
      const call = client.callTool({ name: "memgraph", arguments: DIAGNOSIS_ARGS }, undefined, {
        signal: abort.signal,
        onprogress: () => {
          progressed += 1;
          if (progressed === 1) abort.abort("user cancelled");
        },
      });
      await assert.rejects(call);
      // The server logs the call as Cancelled once the notifications/cancelled reached it.
      await waitFor(() => /tool call memgraph finished: Cancelled/.test(log()), "a Cancelled tool call in the log");
      assert.doesNotMatch(log(), /ERROR/);
      // And the session still works.
      const again = await client.callTool({ name: "list_clusters", arguments: { uid: UID } });
      assert.equal(payload(again).code, "Success");
    });

    it("answers an unknown tool with a JSON-RPC error (-32602)", async () => {
      await assert.rejects(client.callTool({ name: "no_such_tool", arguments: {} }), (err) => {
        assert.equal(err.code, -32602, String(err));
        return true;
      });
    });
  });
}
