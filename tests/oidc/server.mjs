#!/usr/bin/env node
// TEST ONLY: a real OAuth2/OpenID Connect provider (npm `oidc-provider`) on loopback, for the
// end-to-end tests of the gateway's OAuth2 token broker (crates/portcullis/tests/e2e/oauth2.rs).
// Never run it anywhere else: its `/__*` endpoints mint, list and revoke tokens without any
// authentication.
//
// Usage: node server.mjs PORT_FILE [--ttl SECONDS] [--token-delay-ms MS] [--secrets FILE]
//
//   Binds 127.0.0.1 on a free port, writes the port to PORT_FILE once it accepts connections.
//   The issuer is http://127.0.0.1:PORT. Access tokens live --ttl seconds (default: the
//   OIDC_ACCESS_TOKEN_TTL variable, else 60). The token endpoint answers --token-delay-ms late
//   (default 0), so that a test can keep a token request in flight. --secrets names a JSON
//   file {"CLIENT_ID": "SECRET", ...}; a client missing from it gets the secret
//   `CLIENT_ID-secret`.
//
// Clients (all confidential):
//
//   cc-basic   client_credentials, client_secret_basic
//   cc-post    client_credentials, client_secret_post
//   crm-app    refresh_token (rotated on every use: rotateRefreshToken is true), client_secret_basic
//   agent-bot  client_credentials, client_secret_basic; its tokens for resource `urn:portcullis`
//              are JWTs (RS256), signed with the keys published at the jwks_uri (/jwks), with
//              the claims `team: "helpdesk"` and `groups: ["helpdesk"]`
//   agent-guest the same, with the claims `team: "sales"` and `groups: ["guests"]`
//
// Resource servers (RFC 8707 resource indicators; `audience` is accepted as another name for
// `resource`, as some providers call it, and must agree with `resource` when both are sent):
//
//   urn:portcullis:echo   scopes `echo:read echo:write`, opaque tokens, for cc-basic, cc-post and
//                         crm-app: the audience of GET|POST /api/echo
//   urn:portcullis        scope `agent`, JWT access tokens (RS256), for agent-bot and
//                         agent-guest: the audience of Portcullis itself (JWT agent
//                         authentication)
//
// Test-only endpoints:
//
//   POST /__mint_refresh      mints a refresh token for crm-app directly through the provider's
//                             models (a Grant with `offline_access` and `echo:read` on
//                             urn:portcullis:echo, then a RefreshToken), without the
//                             authorization-code dance: {"refresh_token": "..."}
//   GET  /__token_requests    requests to the token endpoint: {"total", "by_grant_type":
//                             {GRANT: N}, "requests": [{"grant_type", "client_id", "auth"
//                             (basic|post|none), "status", "error", "presented_rotations"}]};
//                             `presented_rotations` is how many times the refresh token a
//                             refresh_token request presented had been rotated (0 = minted)
//   GET  /__issued_tokens     every token handed out (by the token endpoint or /__mint_refresh):
//                             [{"kind": "access_token"|"refresh_token"|"id_token", "client_id",
//                             "value"}], so that a test can search logs and answers for them
//   GET  /__api_calls         calls to /api/echo: [{"method", "status", "client_id"}]
//   POST /__revoke_all        revokes every opaque access token issued so far: {"revoked": N}
//                             (refresh tokens stay; JWT access tokens are not stored, so they
//                             can only be invalidated by dropping their key: /__rotate_keys)
//   POST /__rotate_keys[?drop_previous=1]
//                             a new RS256 key signs from now on; the previous ones stay
//                             published at /jwks unless drop_previous=1: {"kid", "published"}
//                             (how: see rotateKeys below)
//   GET|POST /api/echo        a protected API: 200 with what it knows of the token (not the
//                             token, unless `?reflect=1` asks it to play a hostile API that
//                             echoes the Authorization header) when the Bearer token is a
//                             current access token of this provider for urn:portcullis:echo;
//                             401 otherwise
//
// It logs nothing secret: no token, no client secret, no request body. SIGTERM and SIGINT shut
// it down cleanly.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';
// oidc-provider has no public way to accept an extra token-endpoint parameter such as
// `audience`; its internal per-grant allow-lists do. The version is pinned in package.json.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

const ECHO = 'urn:portcullis:echo';
const PORTCULLIS = 'urn:portcullis';

function parseArgs(argv) {
  const [portFile, ...rest] = argv;
  if (!portFile) {
    process.stderr.write('usage: node server.mjs PORT_FILE [--ttl SECONDS] [--token-delay-ms MS] [--secrets FILE]\n');
    process.exit(2);
  }
  const opts = {
    portFile,
    ttl: Number(process.env.OIDC_ACCESS_TOKEN_TTL || 60),
    tokenDelayMs: 0,
    secrets: {},
  };
  for (let i = 0; i < rest.length; i += 2) {
    const [flag, value] = [rest[i], rest[i + 1]];
    if (flag === '--ttl') opts.ttl = Number(value);
    else if (flag === '--token-delay-ms') opts.tokenDelayMs = Number(value);
    else if (flag === '--secrets') opts.secrets = JSON.parse(fs.readFileSync(value, 'utf8'));
    else {
      process.stderr.write(`unknown argument ${flag}\n`);
      process.exit(2);
    }
  }
  if (!Number.isSafeInteger(opts.ttl) || opts.ttl <= 0) {
    process.stderr.write('--ttl must be a positive whole number of seconds\n');
    process.exit(2);
  }
  if (!Number.isSafeInteger(opts.tokenDelayMs) || opts.tokenDelayMs < 0) {
    process.stderr.write('--token-delay-ms must be a whole number of milliseconds\n');
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const secret = (id) => opts.secrets[id] ?? `${id}-secret`;

const CLIENTS = [
  {
    client_id: 'cc-basic',
    client_secret: secret('cc-basic'),
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'cc-post',
    client_secret: secret('cc-post'),
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'crm-app',
    client_secret: secret('crm-app'),
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['refresh_token'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'agent-bot',
    client_secret: secret('agent-bot'),
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'agent-guest',
    client_secret: secret('agent-guest'),
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
];

// Extra claims in each agent client's JWTs for Portcullis, which the gateway maps to Cedar
// attributes and groups: the two clients differ only in them.
const AGENT_CLAIMS = {
  'agent-bot': { team: 'helpdesk', groups: ['helpdesk'] },
  'agent-guest': { team: 'sales', groups: ['guests'] },
};

// Which resource server each client may get tokens for.
const RESOURCE_SERVERS = {
  [ECHO]: {
    clients: new Set(['cc-basic', 'cc-post', 'crm-app']),
    info: () => ({
      scope: 'echo:read echo:write',
      audience: ECHO,
      accessTokenTTL: opts.ttl,
      accessTokenFormat: 'opaque',
    }),
  },
  [PORTCULLIS]: {
    clients: new Set(['agent-bot', 'agent-guest']),
    info: () => ({
      scope: 'agent',
      audience: PORTCULLIS,
      accessTokenTTL: opts.ttl,
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: 'RS256' } },
    }),
  },
};

// ---- signing keys -------------------------------------------------------------------------

let keySerial = 0;

function newSigningKey() {
  keySerial += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const suffix = crypto.randomBytes(4).toString('hex');
  return { ...jwk, kid: `key-${keySerial}-${suffix}`, use: 'sig', alg: 'RS256' };
}

// The first key signs; the others are still published at the jwks_uri so that tokens they
// signed keep verifying until they expire.
let signingKeys = [newSigningKey()];

// ---- what the tests read ------------------------------------------------------------------

const tokenRequests = [];
// Every token handed out, as the tests may search for it: {kind, client_id, value}.
const issued = [];
// The store ids of access tokens, for /__revoke_all: {model, jti}.
const accessTokenIds = [];
const apiCalls = [];

function basicClientId(header) {
  // Only the client id part of `Authorization: Basic`, never the secret.
  const [scheme, value] = (header ?? '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, '%20'));
  } catch {
    return undefined;
  }
}

async function countTokenRequests(ctx, next) {
  if (ctx.method !== 'POST' || ctx.path !== '/token') {
    await next();
    return;
  }
  const auth = ctx.headers.authorization !== undefined ? 'basic' : undefined;
  if (opts.tokenDelayMs > 0) {
    await new Promise((resolve) => { setTimeout(resolve, opts.tokenDelayMs); });
  }
  await next();
  let params = {};
  let entities = {};
  try {
    params = ctx.oidc.params ?? {};
    entities = ctx.oidc.entities ?? {};
  } catch {
    // No OIDC context: the request never reached the token endpoint's handlers.
  }
  const presented = entities.RotatedRefreshToken ?? (params.grant_type === 'refresh_token' ? entities.RefreshToken : undefined);
  const clientId = entities.Client?.clientId ?? params.client_id ?? basicClientId(ctx.headers.authorization) ?? null;
  if (ctx.status === 200) {
    for (const kind of ['access_token', 'refresh_token', 'id_token']) {
      if (typeof ctx.body?.[kind] === 'string') {
        issued.push({ kind, client_id: clientId, value: ctx.body[kind] });
      }
    }
  }
  tokenRequests.push({
    grant_type: params.grant_type ?? null,
    client_id: clientId,
    auth: auth ?? (params.client_secret ? 'post' : 'none'),
    status: ctx.status,
    error: ctx.status === 200 ? null : (ctx.body?.error ?? null),
    presented_rotations: presented ? (presented.rotations ?? 0) : null,
  });
}

// ---- the provider -------------------------------------------------------------------------

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys: signingKeys },
    scopes: ['openid', 'offline_access'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // `audience` alone names the resource; the agent clients' tokens are for Portcullis unless
        // it says otherwise.
        defaultResource: async (ctx, client, oneOf) => oneOf
          ?? ctx.oidc.params.audience
          ?? (client.clientId in AGENT_CLAIMS ? PORTCULLIS : undefined),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource, client) => {
          const server = RESOURCE_SERVERS[resource];
          if (!server || !server.clients.has(client.clientId)) {
            throw new errors.InvalidTarget(`${client.clientId} may not get tokens for this resource`);
          }
          const { audience } = ctx.oidc.params ?? {};
          if (audience !== undefined && audience !== resource) {
            throw new errors.InvalidTarget('audience and resource disagree');
          }
          return server.info();
        },
      },
    },
    extraTokenClaims: async (_ctx, token) => (token.resourceServer?.audience === PORTCULLIS
      ? AGENT_CLAIMS[token.clientId]
      : undefined),
    rotateRefreshToken: true,
    // The grant's refresh token never expires with a browser session (there is none).
    expiresWithSession: async () => false,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? opts.ttl,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? opts.ttl,
      RefreshToken: () => 24 * 60 * 60,
      Grant: () => 24 * 60 * 60,
      IdToken: () => 60 * 60,
      Interaction: () => 60 * 60,
      Session: () => 60 * 60,
      DeviceCode: () => 600,
      BackchannelAuthenticationRequest: () => 600,
      PreAuthorizedCode: () => 600,
    },
  });
  provider.use(countTokenRequests);
  // Accept `audience` at the token endpoint (see the import above).
  const params = instance(provider).grantTypeParams;
  for (const grant of ['client_credentials', 'refresh_token', undefined]) {
    params.get(grant)?.add('audience');
  }
  for (const [event, model] of [
    ['access_token.saved', 'AccessToken'],
    ['client_credentials.saved', 'ClientCredentials'],
  ]) {
    provider.on(event, (token) => accessTokenIds.push({ model, jti: token.jti }));
  }
  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`oidc: server error: ${err.name}: ${err.message}\n`);
  });
  return provider;
}

// ---- the test-only endpoints --------------------------------------------------------------

function reply(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(data);
}

function bearer(req) {
  const match = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
  return match?.[1];
}

async function currentToken(provider, value) {
  if (!value) return undefined;
  // Opaque tokens only: their value is their id in the store. (JWTs are only issued for
  // urn:portcullis, which is not this API's audience.)
  const token = (await provider.AccessToken.find(value)) ?? (await provider.ClientCredentials.find(value));
  if (!token || token.isExpired) return undefined;
  return token;
}

async function echo(provider, req, res, url) {
  const token = await currentToken(provider, bearer(req));
  const audiences = [token?.aud ?? []].flat();
  if (!token || !audiences.includes(ECHO)) {
    apiCalls.push({ method: req.method, status: 401, client_id: token?.clientId ?? null });
    reply(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return;
  }
  apiCalls.push({ method: req.method, status: 200, client_id: token.clientId });
  reply(res, 200, {
    ok: true,
    method: req.method,
    kind: token.kind,
    client_id: token.clientId,
    sub: token.accountId ?? token.clientId,
    scope: token.scope ?? null,
    aud: token.aud,
    expires_in: token.exp - Math.floor(Date.now() / 1000),
    // `?reflect=1` plays a hostile API that sends the credential back.
    ...(url.searchParams.get('reflect') === '1' ? { echo: req.headers.authorization } : {}),
  });
}

async function mintRefresh(provider, res) {
  const client = await provider.Client.find('crm-app');
  const grant = new provider.Grant({ accountId: 'user-1', clientId: client.clientId });
  grant.addOIDCScope('offline_access');
  grant.addResourceScope(ECHO, 'echo:read');
  const grantId = await grant.save();
  const refreshToken = new provider.RefreshToken({
    accountId: 'user-1',
    client,
    grantId,
    gty: 'authorization_code',
    scope: 'offline_access echo:read',
    resource: ECHO,
    expiresWithSession: false,
    iiat: Math.floor(Date.now() / 1000),
  });
  const value = await refreshToken.save();
  issued.push({ kind: 'refresh_token', client_id: client.clientId, value });
  reply(res, 200, { refresh_token: value });
}

async function revokeAll(provider, res) {
  let revoked = 0;
  for (const { model, jti } of accessTokenIds) {
    const { adapter } = provider[model];
    if (await adapter.find(jti)) {
      await adapter.destroy(jti);
      revoked += 1;
    }
  }
  reply(res, 200, { revoked });
}

// oidc-provider reads its keys once, when it is constructed, and has no API to change them.
// So a rotation builds a new Provider instance on the same port with the same issuer, clients
// and token store (the memory adapter's storage is shared by every instance in the process),
// whose keystore has a new key first (it signs) and, unless `?drop_previous=1`, the previous
// keys after it (still published at /jwks, so tokens they signed keep verifying). Requests
// already in flight finish on the old instance.
function rotateKeys(url, res) {
  const dropPrevious = url.searchParams.get('drop_previous') === '1';
  signingKeys = [newSigningKey(), ...(dropPrevious ? [] : signingKeys)];
  current = serve(buildProvider(issuer));
  reply(res, 200, { kid: signingKeys[0].kid, published: signingKeys.map((k) => k.kid) });
}

async function testOnly(provider, req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /__token_requests': {
      const byGrant = {};
      for (const r of tokenRequests) {
        byGrant[r.grant_type] = (byGrant[r.grant_type] ?? 0) + 1;
      }
      return reply(res, 200, { total: tokenRequests.length, by_grant_type: byGrant, requests: tokenRequests });
    }
    case 'GET /__issued_tokens':
      return reply(res, 200, issued);
    case 'GET /__api_calls':
      return reply(res, 200, apiCalls);
    case 'POST /__mint_refresh':
      return mintRefresh(provider, res);
    case 'POST /__revoke_all':
      return revokeAll(provider, res);
    case 'POST /__rotate_keys':
      return rotateKeys(url, res);
    case 'GET /api/echo':
    case 'POST /api/echo':
      req.resume();
      return echo(provider, req, res, url);
    default:
      return reply(res, 404, { error: 'not_found' });
  }
}

// ---- the server ---------------------------------------------------------------------------

// The provider answering requests, and its request handler.
let current;
let issuer;

function serve(provider) {
  return { provider, handle: provider.callback() };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const { provider, handle } = current;
  if (url.pathname.startsWith('/__') || url.pathname.startsWith('/api/')) {
    testOnly(provider, req, res, url).catch((err) => {
      process.stderr.write(`oidc: ${url.pathname}: ${err.name}: ${err.message}\n`);
      if (!res.headersSent) reply(res, 500, { error: 'server_error' });
    });
    return;
  }
  handle(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  current = serve(buildProvider(issuer));
  fs.writeFileSync(opts.portFile, String(port));
  process.stderr.write(`oidc: issuer ${issuer}, access tokens live ${opts.ttl} s\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
