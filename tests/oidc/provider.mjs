// A real OpenID provider for the integration tests: panva's oidc-provider (certified),
// configured from the JSON in $OP_CONFIG, listening on 127.0.0.1 only. It publishes only
// /.well-known/openid-configuration (no oauth-authorization-server document), sends
// RFC 9207 `iss` in authorization responses and uses its development login and consent
// pages. With "userinfo": false it has no userinfo endpoint. Prints "ready <issuer>" once
// it listens; stops when stdin closes.
import http from 'node:http';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.OP_CONFIG);
const prefix = cfg.prefix || '';
const issuer = `http://127.0.0.1:${cfg.port}${prefix}`;

const users = {
  ada: { name: 'Ada Lovelace', email: 'ada@op.test', roles: 'teacher' },
  grace: { name: 'Grace Hopper', email: 'grace@op.test', roles: ['admin', 'teacher'] },
};

const provider = new Provider(issuer, {
  clients: cfg.clients,
  clientBasedCORS: () => false,
  cookies: { keys: ['loopgate-test-cookie-key-0123456789'] },
  jwks: cfg.jwks,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    registration: { enabled: true },
    registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
    rpInitiatedLogout: { enabled: true },
    // `"userinfo": false` in $OP_CONFIG: a provider that only issues ID tokens.
    userinfo: { enabled: cfg.userinfo !== false },
  },
  claims: {
    openid: ['sub'],
    email: ['email'],
    profile: ['name', 'roles'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'read'],
  ttl: {
    AccessToken: cfg.access_token_ttl || 3600,
    IdToken: 3600,
    RefreshToken: 86400,
    Interaction: 600,
    Session: 3600,
    Grant: 86400,
  },
  rotateRefreshToken: true,
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...user };
      },
    };
  },
});
provider.proxy = false;

const stats = { token: 0, userinfo: 0, revocation: 0, end_session: 0, registration: 0 };
provider.on('grant.success', () => { stats.token += 1; });
provider.on('end_session.success', () => { stats.end_session += 1; });
provider.on('registration_create.success', () => { stats.registration += 1; });
// No events for these two: their requests are counted.
const counted = { '/token/revocation': 'revocation', '/me': 'userinfo' };

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url === '/__stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  if (prefix && !req.url.startsWith(prefix)) {
    res.statusCode = 404;
    res.end('not under the issuer path');
    return;
  }
  // Mounted under the issuer's path, as express would: oidc-provider reads the mount
  // point from originalUrl.
  req.originalUrl = req.url;
  req.url = req.url.slice(prefix.length) || '/';
  const name = counted[req.url.split('?')[0]];
  if (name) stats[name] += 1;
  callback(req, res);
});
server.listen(cfg.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
