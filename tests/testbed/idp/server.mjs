// Test OpenID Connect provider for Tessera's end-to-end tests (oidc-provider, configured here).
//
//   node server.mjs --port 0 [--config extra.json] [--access-token-ttl SECONDS]
//
// Listens on 127.0.0.1 and prints exactly one line on stdout when ready:
//   listening on http://127.0.0.1:PORT
// (the issuer is that URL). Everything else goes to stderr.
//
// See README.md next to this file for the features, the --config keys, the test-only admin
// endpoints (/__test/...) and the custom grants (RFC 8693 token exchange, Entra-style OBO).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info; stdout carries only the ready line.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const { default: Provider, errors } = await import('oidc-provider');
const { SignJWT, jwtVerify, createLocalJWKSet, importJWK, decodeProtectedHeader } = await import('jose');

// ------------------------------------------------------------------ arguments

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    config: { type: 'string' },
    'access-token-ttl': { type: 'string' },
    'default-resource': { type: 'string' },
  },
  strict: true,
});

const config = args.config ? JSON.parse(fs.readFileSync(args.config, 'utf8')) : {};

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TT_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const TT_ID = 'urn:ietf:params:oauth:token-type:id_token';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const OIDC_SCOPES = ['openid', 'offline_access', 'email', 'profile', 'groups'];

// Mutable at run time through POST /__test/settings.
const settings = {
  access_token_ttl: Number(args['access-token-ttl'] ?? config.access_token_ttl ?? 600),
  rotate_refresh_tokens: config.rotate_refresh_tokens ?? true,
  auto_consent: config.auto_consent ?? false,
  default_resource: args['default-resource'] ?? config.default_resource ?? null,
  // Delay (ms) before every POST /token is handled: a provider slower than a client's timeout.
  token_delay_ms: config.token_delay_ms ?? 0,
  // null, or {error, error_description?, sub?, grant_types?}: the custom grants (token exchange,
  // OBO) fail with `error` for that subject (any when absent) and those grant types (any when absent).
  grant_error: config.grant_error ?? null,
};
const resourceScopes = config.resource_scopes ?? ['mcp', 'mcp:tools', 'mcp:read', 'mcp:write', 'tools:read', 'tools:call', 'read', 'write', 'admin'];
const extraAudiences = new Set(config.audiences ?? ['api://upstream', 'upstream-api']);
const opaqueResources = new Set(config.opaque_resources ?? []);
const deniedScopes = new Set(config.denied_scopes ?? ['forbidden']);

// ---------------------------------------------------------------------- users

const accounts = new Map();
for (const u of [
  { username: 'alice', password: 'alice-pw', email: 'alice@example.com', name: 'Alice Example', groups: ['admins'] },
  { username: 'bob', password: 'bob-pw', email: 'bob@example.com', name: 'Bob Example', groups: [] },
  ...(config.users ?? []),
]) {
  accounts.set(u.sub ?? u.username, { sub: u.sub ?? u.username, ...u });
}
const byUsername = (name) => [...accounts.values()].find((a) => a.username === name);

function accountClaims(sub) {
  const a = accounts.get(sub);
  if (!a) return undefined;
  return {
    sub: a.sub,
    email: a.email,
    email_verified: a.email_verified ?? true,
    name: a.name,
    preferred_username: a.username,
    groups: a.groups ?? [],
  };
}

// -------------------------------------------------------------------- clients

// Static clients (oidc-provider client metadata, snake_case). An optional `resources` list
// per client names the resources an OBO assertion may be addressed to besides its client_id.
const clientResources = new Map();
const staticClients = (config.clients ?? []).map(({ resources, ...c }) => {
  if (resources) clientResources.set(c.client_id, new Set(resources));
  return c;
});

// ----------------------------------------------------------------------- keys

const signingKeys = []; // newest first; the first one signs
function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `k${signingKeys.length + 1}-${crypto.randomBytes(4).toString('hex')}`;
  const key = { ...jwk, kid, alg: 'RS256', use: 'sig' };
  signingKeys.unshift(key);
  return key;
}
newSigningKey();
const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

// --------------------------------------------------------------------- adapter

// In-memory storage shared by every Provider instance (one is rebuilt on key rotation).
const store = new Map(); // `${model}:${id}` -> { payload, exp (ms epoch) }
const grantMembers = new Map(); // grantId -> Set of store keys
const epoch = () => Math.floor(Date.now() / 1000);

class MemoryAdapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload: structuredClone(payload), exp: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (payload.uid) store.set(`${this.name}:uid:${payload.uid}`, { payload: id, exp: undefined });
    if (payload.userCode) store.set(`${this.name}:userCode:${payload.userCode}`, { payload: id, exp: undefined });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.exp !== undefined && entry.exp < Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return structuredClone(entry.payload);
  }

  async findByUid(uid) {
    const id = store.get(`${this.name}:uid:${uid}`)?.payload;
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = store.get(`${this.name}:userCode:${userCode}`)?.payload;
    return id ? this.find(id) : undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = epoch();
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

function revokeGrantsOf(sub) {
  let revoked = 0;
  for (const [key, entry] of [...store]) {
    if (key.startsWith('Grant:') && !key.startsWith('Grant:uid:') && entry.payload?.accountId === sub) {
      const grantId = key.slice('Grant:'.length);
      for (const member of grantMembers.get(grantId) ?? []) store.delete(member);
      grantMembers.delete(grantId);
      store.delete(key);
      revoked += 1;
    } else if (key.startsWith('Session:') && !key.startsWith('Session:uid:') && entry.payload?.accountId === sub) {
      store.delete(key);
    }
  }
  return revoked;
}

// ---------------------------------------------------------------------- stats

const stats = { requests: {}, grants: {} };
function countRequest(method, path) {
  const k = `${method} ${path.replace(/^\/(interaction|auth)\/[^/]+/, '/$1/:uid')}`;
  stats.requests[k] = (stats.requests[k] ?? 0) + 1;
}
function countGrant(grantType, outcome) {
  const g = (stats.grants[grantType ??= 'unknown'] ??= { success: 0, error: 0 });
  g[outcome] += 1;
}

// ---------------------------------------------------------------- token helpers

let issuer; // set once listening

function isLocalHttpUrl(value) {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === 'localhost') && !u.hash;
  } catch {
    return false;
  }
}
const acceptableTarget = (t) => typeof t === 'string' && t !== '' && (isLocalHttpUrl(t) || extraAudiences.has(t));

function oauthError(code, description, status = 400) {
  const err = new errors.CustomOIDCProviderError(code, description);
  err.status = status;
  err.statusCode = status;
  return err;
}

async function mintJwt(claims, { header = {}, ttl = settings.access_token_ttl, kid } = {}) {
  const key = kid ? signingKeys.find((k) => k.kid === kid) : signingKeys[0];
  if (!key) throw new Error(`no signing key ${kid}`);
  const now = epoch();
  const payload = { iss: issuer, iat: now, exp: now + ttl, jti: crypto.randomUUID(), ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: key.kid, ...header })
    .sign(await importJWK(key, 'RS256'));
}

// An access token as oidc-provider would issue it for a resource, for the custom grants.
async function issueAccessToken({ sub, aud, scope, clientId, extra = {} }) {
  const c = accountClaims(sub);
  const token = await mintJwt({
    sub,
    aud,
    client_id: clientId,
    scope: scope || undefined,
    email: c.email,
    email_verified: c.email_verified,
    name: c.name,
    groups: c.groups,
    ...extra,
  });
  return { token, expiresIn: settings.access_token_ttl };
}

const looksLikeJwt = (t) => typeof t === 'string' && t.split('.').length === 3;

async function verifyOwnJwt(token) {
  const jwks = createLocalJWKSet({ keys: signingKeys.map(publicJwk) });
  try {
    return await jwtVerify(token, jwks, { issuer, algorithms: ['RS256'] });
  } catch (err) {
    throw oauthError('invalid_grant', `token rejected: ${err.code ?? err.message}`);
  }
}

// -> { sub, scope, kind: 'access_token'|'id_token', claims }
async function validateSubjectToken(provider, token, type) {
  if (typeof token !== 'string' || !token) throw oauthError('invalid_request', 'subject token missing');
  if (![TT_ACCESS, TT_ID, TT_JWT].includes(type)) {
    throw oauthError('invalid_request', `unsupported subject_token_type ${type}`);
  }
  let result;
  if (looksLikeJwt(token)) {
    let typ;
    try {
      typ = decodeProtectedHeader(token).typ;
    } catch {
      throw oauthError('invalid_grant', 'subject token is malformed');
    }
    const { payload } = await verifyOwnJwt(token);
    const kind = typ === 'at+jwt' ? 'access_token' : 'id_token';
    result = { sub: payload.sub, scope: payload.scope, kind, claims: payload };
  } else {
    const at = await provider.AccessToken.find(token);
    if (!at || !at.isValid) throw oauthError('invalid_grant', 'subject token is invalid, expired or revoked');
    result = { sub: at.accountId, scope: at.scope, kind: 'access_token', claims: { aud: at.aud, client_id: at.clientId } };
  }
  if (type === TT_ACCESS && result.kind !== 'access_token') throw oauthError('invalid_grant', 'subject token is not an access token');
  if (type === TT_ID && result.kind !== 'id_token') throw oauthError('invalid_grant', 'subject token is not an ID token');
  if (!result.sub || !accounts.has(result.sub)) throw oauthError('invalid_grant', 'subject token names no known user');
  return result;
}

function requireConfidentialClient(ctx) {
  if (ctx.oidc.client.clientAuthMethod === 'none') {
    throw oauthError('invalid_client', 'this grant requires an authenticated (confidential) client', 401);
  }
}

function forcedGrantError(grantType, sub) {
  const f = settings.grant_error;
  if (!f) return;
  if (f.sub && f.sub !== sub) return;
  if (Array.isArray(f.grant_types) && !f.grant_types.includes(grantType)) return;
  throw oauthError(f.error ?? 'invalid_grant', f.error_description ?? 'refused by the test setting grant_error');
}

function checkScopes(scope) {
  for (const s of (scope ?? '').split(' ').filter(Boolean)) {
    if (deniedScopes.has(s)) throw oauthError('invalid_scope', `scope ${s} is not allowed`);
  }
}

// RFC 8693 token exchange.
async function tokenExchangeGrant(ctx) {
  requireConfidentialClient(ctx);
  const { params, client, provider } = ctx.oidc;
  if (params.requested_token_type && ![TT_ACCESS, TT_JWT].includes(params.requested_token_type)) {
    throw oauthError('invalid_request', `unsupported requested_token_type ${params.requested_token_type}`);
  }
  if (!params.subject_token_type) throw oauthError('invalid_request', 'missing required parameter subject_token_type');
  const subject = await validateSubjectToken(provider, params.subject_token, params.subject_token_type);
  forcedGrantError(TOKEN_EXCHANGE, subject.sub);
  const target = params.resource ?? params.audience;
  if (!target) throw oauthError('invalid_target', 'audience or resource is required');
  for (const t of [params.resource, params.audience].filter(Boolean)) {
    if (!acceptableTarget(t)) throw oauthError('invalid_target', `unknown audience/resource ${t}`);
  }
  const scope = params.scope ?? subject.scope ?? '';
  checkScopes(scope);
  const act = { sub: client.clientId };
  if (subject.claims.act) act.act = subject.claims.act;
  const { token, expiresIn } = await issueAccessToken({
    sub: subject.sub, aud: target, scope, clientId: client.clientId, extra: { act },
  });
  ctx.body = {
    access_token: token,
    issued_token_type: TT_ACCESS,
    token_type: 'Bearer',
    expires_in: expiresIn,
    ...(scope ? { scope } : {}),
  };
}

// Entra-style on-behalf-of: jwt-bearer assertion + requested_token_use=on_behalf_of.
async function oboGrant(ctx) {
  requireConfidentialClient(ctx);
  const { params, client } = ctx.oidc;
  if (params.requested_token_use !== 'on_behalf_of') {
    throw oauthError('invalid_request', 'requested_token_use must be on_behalf_of');
  }
  if (!looksLikeJwt(params.assertion)) throw oauthError('invalid_grant', 'assertion must be a JWT');
  const { payload } = await verifyOwnJwt(params.assertion);
  const auds = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  const own = clientResources.get(client.clientId);
  const audOk = auds.some((a) => a === client.clientId || (own ? own.has(a) : isLocalHttpUrl(a)));
  if (!audOk) throw oauthError('invalid_grant', 'assertion audience is not this client');
  if (!payload.sub || !accounts.has(payload.sub)) throw oauthError('invalid_grant', 'assertion names no known user');
  forcedGrantError(JWT_BEARER, payload.sub);
  if (!params.scope) throw oauthError('invalid_request', 'missing required parameter scope');

  let resource;
  const names = [];
  for (const s of params.scope.split(' ').filter(Boolean)) {
    if (OIDC_SCOPES.includes(s)) continue;
    const m = /^(.+:\/\/.+)\/([^/]+)$/.exec(s);
    if (!m) throw oauthError('invalid_scope', `scope ${s} names no resource (expected <resource>/<scope>)`);
    if (resource && resource !== m[1]) throw oauthError('invalid_scope', 'scopes for more than one resource');
    [, resource] = m;
    if (m[2] !== '.default') names.push(m[2]);
  }
  if (!resource) throw oauthError('invalid_scope', 'no resource scope requested');
  if (!acceptableTarget(resource)) throw oauthError('invalid_target', `unknown resource ${resource}`);
  const scope = names.join(' ');
  checkScopes(scope);
  const { token, expiresIn } = await issueAccessToken({
    sub: payload.sub, aud: resource, scope, clientId: client.clientId, extra: { azp: client.clientId, scp: scope || undefined },
  });
  ctx.body = {
    access_token: token,
    token_type: 'Bearer',
    expires_in: expiresIn,
    ext_expires_in: expiresIn,
    scope: params.scope,
  };
}

// -------------------------------------------------------------------- provider

function buildProvider() {
  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: staticClients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    async findAccount(ctx, sub) {
      if (!accounts.has(sub)) return undefined;
      return { accountId: sub, claims: async () => accountClaims(sub) };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Resource scopes are listed too: registration validates a client's `scope` metadata against this.
    scopes: [...OIDC_SCOPES, ...resourceScopes],
    conformIdTokenClaims: false, // email, name, groups in the ID token too
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true }, // open: no initial access token
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf ?? settings.default_resource ?? undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (!acceptableTarget(resource)) throw new errors.InvalidTarget(`unknown resource ${resource}`);
          const requested = (ctx.oidc.params?.scope ?? '').split(' ').filter((s) => s && !OIDC_SCOPES.includes(s));
          return {
            scope: [...new Set([...resourceScopes, ...requested])].join(' '),
            audience: resource,
            accessTokenTTL: settings.access_token_ttl,
            accessTokenFormat: opaqueResources.has(resource) ? 'opaque' : 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => settings.rotate_refresh_tokens,
    expiresWithSession: async () => false,
    extraTokenClaims: async (ctx, token) => {
      if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
      const { sub, preferred_username, ...claims } = accountClaims(token.accountId) ?? {};
      return claims;
    },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? settings.access_token_ttl,
      AuthorizationCode: 120,
      ClientCredentials: () => settings.access_token_ttl,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
      RefreshToken: 86400,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    clientBasedCORS: () => true,
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
    },
  });
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchangeGrant, [
    'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
    'requested_token_type', 'audience', 'resource', 'scope',
  ]);
  provider.registerGrantType(JWT_BEARER, oboGrant, ['assertion', 'requested_token_use', 'scope']);
  provider.on('grant.success', (ctx) => countGrant(ctx.oidc.params?.grant_type, 'success'));
  provider.on('grant.error', (ctx, err) => {
    countGrant(ctx.oidc?.params?.grant_type, 'error');
    console.error(`grant.error ${ctx.oidc?.params?.grant_type}: ${err.error} ${err.error_description ?? ''}`);
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return { provider, handler: provider.callback() };
}

// ------------------------------------------------------------------------ HTML

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;

function loginPage(uid, clientId, error) {
  return page('Sign in', `<h1>Sign in</h1><p>to continue to ${esc(clientId)}</p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="uid" value="${esc(uid)}">
<label>Username <input type="text" name="username" autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit" name="action" value="login">Sign in</button>
<button type="submit" name="action" value="abort">Cancel</button>
</form>`);
}

function consentPage(uid, clientId, details) {
  const scopes = [...(details.missingOIDCScope ?? []), ...Object.entries(details.missingResourceScopes ?? {}).map(([r, s]) => `${r}: ${s.join(' ')}`)];
  return page('Consent', `<h1>Authorize ${esc(clientId)}</h1>
<ul>${scopes.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${esc(uid)}/consent">
<input type="hidden" name="uid" value="${esc(uid)}">
<button type="submit" name="decision" value="approve" id="approve">Approve</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form>`);
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}
const sendJson = (res, status, obj) => send(res, status, JSON.stringify(obj), 'application/json');

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------- interactions

let current; // { provider, handler }

async function grantConsent(provider, interaction) {
  const { prompt: { details }, params, session: { accountId } } = interaction;
  let { grantId } = interaction;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const savedId = await grant.save();
  return grantId ? {} : { grantId: savedId };
}

async function interactionRoute(req, res, url) {
  const { provider } = current;
  const [, , uid, action] = url.pathname.split('/');
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, page('Error', `<p id="error">${esc(err.message)}</p>`));
  }
  if (interaction.uid !== uid) return send(res, 400, page('Error', '<p id="error">interaction mismatch</p>'));
  const clientId = interaction.params.client_id;

  if (req.method === 'GET' && !action) {
    if (interaction.prompt.name === 'login') return send(res, 200, loginPage(uid, clientId));
    if (interaction.prompt.name === 'consent') {
      if (settings.auto_consent) {
        const consent = await grantConsent(provider, interaction);
        return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
      }
      return send(res, 200, consentPage(uid, clientId, interaction.prompt.details));
    }
    return send(res, 400, page('Error', `<p id="error">unsupported prompt ${esc(interaction.prompt.name)}</p>`));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    if (form.get('action') === 'abort') {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
    }
    const account = byUsername(form.get('username') ?? '');
    const pw = Buffer.from(form.get('password') ?? '');
    const ok = account && pw.length === Buffer.byteLength(account.password)
      && crypto.timingSafeEqual(pw, Buffer.from(account.password));
    if (!ok) return send(res, 200, loginPage(uid, clientId, 'Invalid username or password.'));
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'consent') {
    const form = new URLSearchParams(await readBody(req));
    if (interaction.prompt.name !== 'consent') return send(res, 400, page('Error', '<p id="error">no consent pending</p>'));
    if (form.get('decision') !== 'approve') {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User denied consent' }, { mergeWithLastSubmission: false });
    }
    const consent = await grantConsent(provider, interaction);
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }
  return send(res, 405, page('Error', '<p id="error">method not allowed</p>'));
}

// ------------------------------------------------------------------ test admin

async function adminRoute(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  const q = url.searchParams;
  switch (route) {
    case 'POST /__test/rotate-keys': {
      const key = newSigningKey();
      if (q.get('drop_old') === '1') signingKeys.splice(1);
      current = buildProvider();
      return sendJson(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
    }
    case 'GET /__test/stats':
      return sendJson(res, 200, stats);
    case 'POST /__test/stats/reset':
      stats.requests = {};
      stats.grants = {};
      return sendJson(res, 200, stats);
    case 'GET /__test/settings':
      return sendJson(res, 200, settings);
    case 'POST /__test/settings': {
      const patch = JSON.parse((await readBody(req)) || '{}');
      for (const [k, v] of Object.entries(patch)) {
        if (!(k in settings)) return sendJson(res, 400, { error: `unknown setting ${k}` });
        settings[k] = v;
      }
      return sendJson(res, 200, settings);
    }
    case 'POST /__test/revoke-grants': {
      const sub = q.get('sub');
      if (!sub) return sendJson(res, 400, { error: 'sub is required' });
      return sendJson(res, 200, { revoked: revokeGrantsOf(sub) });
    }
    case 'POST /__test/mint': {
      // Sign arbitrary claims with the provider's key (default claims: iss, iat, exp, jti).
      const body = JSON.parse((await readBody(req)) || '{}');
      const token = await mintJwt(body.claims ?? {}, { header: body.header, ttl: body.ttl, kid: body.kid });
      return sendJson(res, 200, { token });
    }
    default:
      return sendJson(res, 404, { error: `no test route ${route}` });
  }
}

// ---------------------------------------------------------------------- server

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  countRequest(req.method, url.pathname);
  try {
    if (url.pathname.startsWith('/__test/')) return await adminRoute(req, res, url);
    if (url.pathname.startsWith('/interaction/')) return await interactionRoute(req, res, url);
    if (req.method === 'POST' && url.pathname === '/token' && settings.token_delay_ms > 0) {
      await new Promise((resolve) => setTimeout(resolve, settings.token_delay_ms));
    }
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      req.url = `/.well-known/openid-configuration${url.search}`;
    }
    return current.handler(req, res);
  } catch (err) {
    console.error('request failed', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err.message ?? err) });
    else res.end();
  }
});

server.listen(Number(args.port), '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = buildProvider();
  process.stdout.write(`listening on ${issuer}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
