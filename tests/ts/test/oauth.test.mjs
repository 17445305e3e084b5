// sysom-mcp as an OAuth resource server with the TypeScript SDK client: a real OpenID provider
// (oidc-provider, tests/oauth/provider.mjs) issues a client-credentials token for this server's
// canonical URI; the SDK sends it over Streamable HTTP and legacy SSE. The right audience and
// scope works and lists only the scope's tools; a tool outside the scope and a token for another
// audience are refused.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";

import { MockSysom, HttpServer, payload, REPO_ROOT, UID } from "../harness.mjs";

const FIXTURE = join(REPO_ROOT, "tests", "oauth");
const RESOURCE = "https://sysom-mcp.test/mcp/unified";
const READ = ["check_sysom_initialed", "list_all_instances", "list_clusters", "list_history_tasks",
  "list_instances", "list_pods_of_instance", "query_diagnosis_task"];
const installed = existsSync(join(FIXTURE, "node_modules", "oidc-provider"));

async function startProvider() {
  const proc = spawn(process.execPath, [join(FIXTURE, "provider.mjs")], { stdio: ["pipe", "pipe", "ignore"] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`oidc-provider fixture exited rc=${code}`)));
  });
  return { proc, ...JSON.parse(line) };
}

async function clientCredentials(idp, scope, resource = RESOURCE) {
  const resp = await fetch(idp.token_endpoint, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from("agent:agent-secret").toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ grant_type: "client_credentials", scope, resource }),
  });
  assert.equal(resp.status, 200, await resp.clone().text());
  return (await resp.json()).access_token;
}

async function connect(kind, server, token) {
  const client = new Client({ name: "sysom-mcp-ts-oauth", version: "0" });
  const requestInit = { headers: { Authorization: `Bearer ${token}` } };
  const transport = kind === "streamable"
    ? new StreamableHTTPClientTransport(server.url, { requestInit })
    : new SSEClientTransport(server.url, { requestInit });
  await client.connect(transport);
  return client;
}

describe("TypeScript SDK with OAuth access tokens", { skip: !installed && "run `npm ci --prefix tests/oauth`" }, () => {
  let mock;
  let idp;
  let server;

  before(async () => {
    mock = await MockSysom.start();
    idp = await startProvider();
    server = await HttpServer.start(mock, { args: ["--oauth-issuer", idp.issuer, "--oauth-resource", RESOURCE] });
  });

  after(async () => {
    await server?.stop();
    idp?.proc.stdin.end();
    mock?.stop();
  });

  for (const kind of ["streamable", "sse"]) {
    it(`${kind}: the right audience and scope works, and only the scope's tools are listed`, async () => {
      const token = await clientCredentials(idp, "sysom:read");
      const client = await connect(kind, server, token);
      try {
        const { tools } = await client.listTools();
        assert.deepEqual(tools.map((t) => t.name).sort(), READ);
        const out = payload(await client.callTool({ name: "list_all_instances", arguments: { uid: UID } }));
        assert.equal(out.code, "Success");
        await assert.rejects(client.callTool({ name: "initial_sysom", arguments: { uid: UID } }),
          (err) => /sysom:admin|403/.test(String(err)));
      } finally {
        await client.close();
      }
      assert.ok(!server.log().includes(token), "the access token reached the log");
    });

    it(`${kind}: a token for another audience is refused`, async () => {
      const token = await clientCredentials(idp, "sysom:read", "https://other.test/mcp");
      await assert.rejects(connect(kind, server, token), (err) => err.code === 401 || /401|invalid_token/.test(String(err)));
    });
  }
});
