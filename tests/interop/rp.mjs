// A downstream relying party nobody here wrote: panva's `openid-client` v6 (OpenID
// Certified RP), signing in at idfabric's broker, for tests/interop.rs.
//
// The browser part (sign-in at idfabric and its upstream provider) needs a client that
// follows redirects and keeps cookies, so the script runs in two steps around it:
//
//   node rp.mjs start  --issuer URL --client-id ID --client-secret S --redirect-uri URI \
//                      --state-file F [--idp PROVIDER] [--scope "openid profile email"]
//       discovery, then prints {"authorization_url": …} and keeps state, nonce and the
//       PKCE verifier in F.
//   node rp.mjs finish --state-file F --callback URL [--post-logout-redirect-uri URI]
//       the code exchange (openid-client validates the ID token), userinfo, refresh,
//       introspection, revocation and the end-session URL; prints one JSON report.
//
// Every step is the library's own code with its defaults, except `allowInsecureRequests`
// (the broker listens on plain-HTTP loopback in tests) and client_secret_basic (what the
// broker's confidential clients use). A step that fails is reported with the library's
// error (name, code, message, OAuth error) and the following steps still run when they can.

import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';

const [command, ...rest] = process.argv.slice(2);
const { values: opt } = parseArgs({
  args: rest,
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    'state-file': { type: 'string' },
    idp: { type: 'string' },
    scope: { type: 'string', default: 'openid profile email' },
    callback: { type: 'string' },
  },
});

function need(name, value = opt[name]) {
  if (!value) {
    console.error(`rp.mjs ${command}: --${name} is required`);
    process.exit(2);
  }
  return value;
}

async function configuration(c) {
  return client.discovery(new URL(c.issuer), c.client_id, undefined, client.ClientSecretBasic(c.client_secret), {
    execute: [client.allowInsecureRequests],
  });
}

/** The library's error, as precisely as it gives it. */
function describe(e) {
  const out = { name: e?.name, message: e?.message };
  for (const k of ['code', 'error', 'error_description', 'status']) {
    if (e?.[k] !== undefined) out[k] = e[k];
  }
  if (e?.cause !== undefined) {
    const c = e.cause;
    out.cause = c instanceof Error ? { name: c.name, message: c.message, code: c.code } : c;
  }
  return out;
}

async function start() {
  const c = {
    issuer: need('issuer'),
    client_id: need('client-id'),
    client_secret: need('client-secret'),
    redirect_uri: need('redirect-uri'),
  };
  const file = need('state-file');
  const config = await configuration(c);
  const meta = config.serverMetadata();
  const scopes = opt.scope.split(' ').filter(Boolean);
  if (meta.scopes_supported?.includes('offline_access') && !scopes.includes('offline_access')) {
    scopes.push('offline_access');
  }
  const pkce = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const params = {
    redirect_uri: c.redirect_uri,
    scope: scopes.join(' '),
    code_challenge: await client.calculatePKCECodeChallenge(pkce),
    code_challenge_method: 'S256',
    state,
    nonce,
  };
  if (opt.idp) params.idp = opt.idp;
  const url = client.buildAuthorizationUrl(config, params);
  writeFileSync(file, JSON.stringify({ ...c, pkce, state, nonce }));
  process.stdout.write(`${JSON.stringify({ authorization_url: url.href, metadata: meta })}\n`);
}

async function finish() {
  const file = need('state-file');
  const callback = need('callback');
  const c = JSON.parse(readFileSync(file, 'utf8'));
  const report = { ok: {}, errors: {} };
  const step = async (name, f) => {
    try {
      const v = await f();
      report.ok[name] = v ?? true;
      return v;
    } catch (e) {
      report.errors[name] = describe(e);
      return undefined;
    }
  };
  const config = await step('discovery', () => configuration(c));
  if (!config) return report;
  report.ok.discovery = true;
  report.metadata = config.serverMetadata();

  const tokens = await step('authorization_code_grant', async () => {
    const t = await client.authorizationCodeGrant(config, new URL(callback), {
      pkceCodeVerifier: c.pkce,
      expectedState: c.state,
      expectedNonce: c.nonce,
      idTokenExpected: true,
    });
    return t;
  });
  if (!tokens) return report;
  const claims = tokens.claims();
  report.token_response = {
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    scope: tokens.scope,
    has_refresh_token: typeof tokens.refresh_token === 'string',
  };
  report.id_token_claims = claims;
  report.ok.authorization_code_grant = true;

  await step('userinfo', () => client.fetchUserInfo(config, tokens.access_token, claims.sub));

  await step('introspection_access', () => client.tokenIntrospection(config, tokens.access_token));

  let refreshed;
  if (tokens.refresh_token) {
    refreshed = await step('refresh', async () => {
      const r = await client.refreshTokenGrant(config, tokens.refresh_token);
      return {
        access_token_differs: r.access_token !== tokens.access_token,
        refresh_token_rotated: typeof r.refresh_token === 'string' && r.refresh_token !== tokens.refresh_token,
        id_token_sub: r.claims()?.sub,
        _tokens: r,
      };
    });
    if (refreshed) {
      const r = refreshed._tokens;
      delete refreshed._tokens;
      report.ok.refresh = refreshed;
      await step('introspection_refresh', () => client.tokenIntrospection(config, r.refresh_token));
      await step('revocation', () => client.tokenRevocation(config, r.refresh_token));
      await step('introspection_after_revocation', () => client.tokenIntrospection(config, r.refresh_token));
      await step('refresh_after_revocation_refused', async () => {
        try {
          await client.refreshTokenGrant(config, r.refresh_token);
        } catch (e) {
          return describe(e);
        }
        throw new Error('the revoked refresh token was accepted');
      });
      // Rotation: the first refresh token was spent by the refresh above.
      await step('refresh_reuse_refused', async () => {
        try {
          await client.refreshTokenGrant(config, tokens.refresh_token);
        } catch (e) {
          return describe(e);
        }
        throw new Error('the spent refresh token was accepted again');
      });
    }
  }
  await step('access_revocation', () => client.tokenRevocation(config, tokens.access_token));
  await step('introspection_access_after_revocation', () => client.tokenIntrospection(config, tokens.access_token));
  // The broker's Bearer challenge must parse in openid-client (RFC 6750 §3).
  await step('userinfo_after_revocation_refused', async () => {
    try {
      await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    } catch (e) {
      const out = describe(e);
      if (e?.cause?.[0]?.parameters) out.challenge = { scheme: e.cause[0].scheme, parameters: e.cause[0].parameters };
      return out;
    }
    throw new Error('a revoked access token was accepted at userinfo');
  });
  // A wrong client secret: the broker's 401 and Basic challenge, as openid-client sees them.
  await step('wrong_secret_refused', async () => {
    const wrong = await configuration({ ...c, client_secret: `${c.client_secret}x` });
    try {
      await client.tokenIntrospection(wrong, tokens.access_token);
    } catch (e) {
      return describe(e);
    }
    throw new Error('introspection with a wrong client secret was accepted');
  });

  await step('end_session_url', () => {
    const params = { id_token_hint: tokens.id_token };
    if (opt['post-logout-redirect-uri']) params.post_logout_redirect_uri = opt['post-logout-redirect-uri'];
    return client.buildEndSessionUrl(config, params).href;
  });
  return report;
}

const main = { start, finish }[command];
if (!main) {
  console.error('usage: node rp.mjs start|finish --help in the header of this file');
  process.exit(2);
}
main()
  .then((report) => {
    if (report) process.stdout.write(`${JSON.stringify(report)}\n`);
  })
  .catch((e) => {
    console.error(JSON.stringify(describe(e)));
    process.exit(1);
  });
