// An upstream OpenID Provider nobody here wrote: panva's `oidc-provider` (OpenID
// Certified), configured as a plain confidential-client OP, for tests/interop.rs.
//
//   node op.mjs --port 0 --client-id ID --client-secret SECRET \
//       --redirect-uri http://host:port/.idfabric/callback \
//       [--post-logout-redirect-uri http://host:port/.idfabric/logged-out] [--id-token-ttl 3600] [--tether]
//       [--backchannel-logout-uri http://host:port/.idfabric/backchannel-logout]
//
// Prints `READY <issuer>` on stdout once listening (port 0 picks a free port). With
// `--tether` it exits when its stdin closes (the test process is gone).
//
// Everything protocol-related is oidc-provider's own behaviour with its defaults
// (client_secret_basic, `iss` in the authorization response, standard claims only from
// the UserInfo endpoint for the code flow, RP-initiated logout with a confirmation
// form). Only the parts an OP leaves to its deployer are written here: the accounts,
// and a non-interactive login page that a plain cookie-keeping HTTP client can drive:
// `GET /interaction/:uid` renders a form with a `login` field, and posting it signs the
// user in and grants the requested scopes and claims in one step.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: process.env.OP_PORT ?? '0' },
    'client-id': { type: 'string', default: process.env.OP_CLIENT_ID ?? 'idfabric' },
    'client-secret': { type: 'string', default: process.env.OP_CLIENT_SECRET ?? 'interop-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
    'id-token-ttl': { type: 'string', default: '3600' },
    'backchannel-logout-uri': { type: 'string' },
    tether: { type: 'boolean', default: false },
  },
});

// The accounts: `sub` is stable and opaque, as it is at every real OP.
const ACCOUNTS = {
  ada: {
    sub: 'u-1815-ada',
    email: 'ada@interop.test',
    email_verified: true,
    name: 'Ada Lovelace',
    preferred_username: 'ada',
    groups: ['engineers', 'admins'],
    amr: ['pwd'],
  },
  grace: {
    sub: 'u-1906-grace',
    email: 'grace@interop.test',
    email_verified: false,
    name: 'Grace Hopper',
    preferred_username: 'grace',
    groups: ['engineers'],
    amr: ['pwd', 'otp'],
  },
};
const BY_SUB = Object.fromEntries(Object.values(ACCOUNTS).map((a) => [a.sub, a]));

function findAccount(_ctx, sub) {
  const a = BY_SUB[sub];
  if (!a) return undefined;
  const { amr: _amr, ...claims } = a;
  return { accountId: sub, claims: async () => ({ ...claims }) };
}

// A fresh signing key per run (oidc-provider would otherwise use its published dev key).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `op-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      data += c;
      if (data.length > 65536) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

async function main() {
  const server = createServer();
  await new Promise((resolve) => server.listen(Number(opt.port), opt.host, resolve));
  const issuer = `http://${opt.host}:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: opt['client-id'],
        client_secret: opt['client-secret'],
        redirect_uris: opt['redirect-uri'],
        post_logout_redirect_uris: opt['post-logout-redirect-uri'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        // OpenID Connect Back-Channel Logout: the OP posts a logout token (with `sid`)
        // to idfabric when the user's session at the OP ends.
        ...(opt['backchannel-logout-uri']
          ? { backchannel_logout_uri: opt['backchannel-logout-uri'], backchannel_logout_session_required: true }
          : {}),
        // token_endpoint_auth_method left at its default: client_secret_basic
      },
    ],
    // Only Basic client authentication is enabled (and advertised in discovery), so
    // idfabric must pick client_secret_basic from the discovery document.
    clientAuthMethods: ['client_secret_basic'],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount,
    claims: {
      // The authentication event's claims ride with `openid`, so they reach the ID token.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: Boolean(opt['backchannel-logout-uri']) },
    },
    // A first-party client: refresh tokens without asking for offline_access.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      IdToken: Number(opt['id-token-ttl']),
      AccessToken: Number(opt['id-token-ttl']),
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><body><h1>OP error</h1><pre>${escape(JSON.stringify(out))}</pre></body></html>`;
    },
  });

  const callback = provider.callback();

  async function interaction(req, res, url) {
    const parts = url.pathname.split('/').filter(Boolean); // interaction, uid, [login]
    const details = await provider.interactionDetails(req, res);
    if (parts[1] !== details.uid) {
      return page(res, 400, 'Wrong interaction', '');
    }
    if (req.method === 'GET') {
      return page(
        res,
        200,
        'Sign in to the interop OP',
        `<p>prompt: ${escape(details.prompt.name)}</p>` +
          `<form method="post" action="/interaction/${escape(details.uid)}/login">` +
          `<input type="text" name="login" autocomplete="username">` +
          '<button type="submit">Sign in</button></form>',
      );
    }
    const form = await readForm(req);
    const account = ACCOUNTS[form.get('login') ?? ''];
    if (!account) {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown user' }, { mergeWithLastSubmission: false });
    }
    // Login and consent in one step: grant what the client asked for.
    const { params } = details;
    const grant = new provider.Grant({ accountId: account.sub, clientId: params.client_id });
    grant.addOIDCScope(String(params.scope ?? 'openid'));
    if (params.claims) {
      const claims = JSON.parse(params.claims);
      for (const where of ['id_token', 'userinfo']) {
        if (claims[where]) grant.addOIDCClaims(Object.keys(claims[where]));
      }
    }
    const grantId = await grant.save();
    const acr = account.amr.length > 1 ? 'urn:interop:loa:2' : 'urn:interop:loa:1';
    const result = { login: { accountId: account.sub, amr: account.amr, acr }, consent: { grantId } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }

  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/interaction/')) {
      interaction(req, res, url).catch((e) => page(res, 400, 'Interaction failed', `<pre>${escape(e.message)}</pre>`));
      return;
    }
    callback(req, res);
  });

  process.stdout.write(`READY ${issuer}\n`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (opt.tether) {
    // Tethered to the test process: when its stdin closes, the OP goes too.
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
