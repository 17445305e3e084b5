// A real OpenID provider for the OAuth tests (tests/py/test_http_oauth.py): oidc-provider with
// the client-credentials grant and resource indicators (RFC 8707), issuing JWT access tokens whose
// audience is the requested resource and whose scope is what the client asked for among
// sysom:read, sysom:diagnose, sysom:admin.
//
//   node provider.mjs            listens on 127.0.0.1:<free port>, prints one JSON line
//                                {"issuer": ..., "jwks_uri": ..., "token_endpoint": ...}
//
// Test-only endpoints beside the provider's own (never part of a real deployment):
//   POST /test/rotate   replaces the signing key by a new one (new kid); the old one leaves the JWKS
//   POST /test/mint     {"claims": {...}, "forge": bool} -> {"token": ...}: a JWT signed with the
//                       (claims given as null are left out)
//                       current key (or, with forge, with a stranger key claiming the same kid), for
//                       the defects the provider would never issue itself (expired, not yet valid,
//                       another issuer, a bad signature).
//
// Clients: "agent" / "agent-secret" may ask for every sysom scope.
import http from 'node:http';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { SignJWT, exportJWK, generateKeyPair, importJWK } from 'jose';

const ALG = 'ES256';
const SCOPES = 'sysom:read sysom:diagnose sysom:admin';

async function newKey() {
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: randomUUID(), alg: ALG, use: 'sig' };
}

function makeProvider(issuer, key) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'agent',
      client_secret: 'agent-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: ALG,
      scope: SCOPES,
    }],
    jwks: { keys: [key] },
    scopes: SCOPES.split(' '),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Any resource the test names: a token for another audience is how "wrong audience"
        // is tested.
        getResourceServerInfo: async (_ctx, resource) => ({
          scope: SCOPES,
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: ALG } },
        }),
      },
    },
  });
  provider.proxy = false;
  return provider;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString() || '{}';
  return JSON.parse(text);
}

async function main() {
  let key = await newKey();
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  let provider = makeProvider(issuer, key);
  // Quiet: the provider warns about http issuers and the like; the tests read stdout only.
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));

  server.on('request', async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/test/rotate') {
        key = await newKey();
        provider = makeProvider(issuer, key);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ kid: key.kid }));
        return;
      }
      if (req.method === 'POST' && req.url === '/test/mint') {
        const { claims = {}, forge = false } = await readJson(req);
        const signing = forge ? { ...(await newKey()), kid: key.kid } : key;
        const now = Math.floor(Date.now() / 1000);
        const payload = {
          iss: issuer, sub: 'minted', iat: now, exp: now + 300, client_id: 'agent', scope: SCOPES, ...claims,
        };
        // A claim given as null is left out.
        for (const k of Object.keys(payload)) if (payload[k] === null) delete payload[k];
        const token = await new SignJWT(payload)
          .setProtectedHeader({ alg: ALG, kid: signing.kid, typ: 'at+jwt' })
          .sign(await importJWK(signing, ALG));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token }));
        return;
      }
      provider.callback()(req, res);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
  });

  process.stdout.write(`${JSON.stringify({
    issuer,
    jwks_uri: `${issuer}/jwks`,
    token_endpoint: `${issuer}/token`,
  })}\n`);
  // Exit when the test closes stdin (or dies), so no provider outlives its test.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
