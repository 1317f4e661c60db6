// tests/browser/tokens_page.test.mjs: the Access tokens page (issue 5) in a real browser.
//
// Starts the real `patledger serve` ($PATLEDGER_BIN) on a free port in a temporary data
// directory (the root token is read from its stdout), then drives Debian's Chromium
// (/usr/bin/chromium, headless; never a downloaded browser) with playwright-core through
// the steps: sign in with the root token; create a token with two scopes; read
// it from the page once; prove it authenticates (GET /api/v4/auth from node: 200); reload
// and prove it is no longer shown; revoke it in the page (through the confirmation
// dialog); prove it now gets 401; rotate one and see the new token once; an admin sees
// and revokes another user's token; a non-admin sees neither the sudo scope nor other
// users' tokens; the page at phone width. Along the way: no request leaves the page's
// origin, no console error (a CSP violation is one), no cookie, the secret is in no
// storage and in no access-log line.
//
// A screenshot of each step goes to $ARTIFACTS (default ./browser-artifacts), with the
// server's logs. Exit status 0 only if every step passed. Missing chromium, node or
// playwright-core is a FAILURE with a message, never a skip.
//
// Run by ctest (label browser; tests/browser/CMakeLists.txt), or by hand:
//   cd tests/browser && npm ci && \
//   PATLEDGER_BIN=../../build/tools/patledger ARTIFACTS=/tmp/shots node tokens_page.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BIN = process.env.PATLEDGER_BIN;
const ARTIFACTS = path.resolve(process.env.ARTIFACTS || 'browser-artifacts');
const TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 180000);
const TOKEN_RE = /^glpat-[0-9A-Za-z]{36}$/;

function fatal(message) {
  console.error(`tokens_page: FAIL: ${message}`);
  process.exit(1);
}

// ---- preconditions: fail, never skip --------------------------------------------------

const [major] = process.versions.node.split('.').map(Number);
if (major < 18) fatal(`node ${process.versions.node} is too old: 18 or later is needed`);
if (!BIN) fatal('PATLEDGER_BIN is not set (the path of the patledger binary)');
try { accessSync(BIN, fsConstants.X_OK); } catch { fatal(`PATLEDGER_BIN=${BIN} is not an executable`); }
if (!existsSync(CHROMIUM)) {
  fatal(`${CHROMIUM} does not exist: install Debian's Chromium (apt-get install chromium); ` +
        'this test needs it and does not skip');
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fatal(`playwright-core is not installed (run \`npm ci\` in tests/browser): ${e.message}`);
}

// ---- the run ----------------------------------------------------------------------------

const t0 = Date.now();
const cleanups = [];
const problems = [];  // console errors, foreign requests: checked at every step
let stepNo = 0;
let current = '';

const watchdog = setTimeout(() => {
  console.error(`tokens_page: FAIL: timed out after ${TIMEOUT_MS} ms in step "${current}"`);
  finish(1);
}, TIMEOUT_MS);

async function finish(code) {
  clearTimeout(watchdog);
  for (const c of cleanups.reverse()) {
    try { await c(); } catch { /* best effort */ }
  }
  console.log(`tokens_page: ${code === 0 ? 'PASS' : 'FAIL'} in ${((Date.now() - t0) / 1000).toFixed(1)} s; ` +
              `screenshots in ${ARTIFACTS}`);
  process.exit(code);
}

let shotPage = null;
async function step(name, fn) {
  current = name;
  stepNo += 1;
  const id = String(stepNo).padStart(2, '0');
  const started = Date.now();
  try {
    await fn();
    if (problems.length) throw new Error(`page problems: ${problems.join(' | ')}`);
    console.log(`ok ${id} - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    console.error(`not ok ${id} - ${name}\n${e && e.stack ? e.stack : e}`);
    if (shotPage) {
      try { await shotPage.screenshot({ path: path.join(ARTIFACTS, `${id}-FAILED.png`), fullPage: true }); }
      catch { /* the page may be gone */ }
    }
    await finish(1);
  }
}

async function shot(page, name, options = {}) {
  const id = String(stepNo).padStart(2, '0');
  await page.screenshot({ path: path.join(ARTIFACTS, `${id}-${name}.png`), fullPage: true, ...options });
}

// ---- patledger serve ---------------------------------------------------------------------

await rm(ARTIFACTS, { recursive: true, force: true });
await mkdir(ARTIFACTS, { recursive: true });
const tmp = await mkdtemp(path.join(process.env.TMPDIR || tmpdir(), 'patledger-browser-'));
cleanups.push(() => rm(tmp, { recursive: true, force: true }));
const accessLog = path.join(tmp, 'access.log');

let serveOut = '';
let serveErr = '';
const server = spawn(BIN, ['serve', '--data', path.join(tmp, 'data'), '--listen', '127.0.0.1:0',
                           '--threads', '2', '--access-log', accessLog],
                     { stdio: ['ignore', 'pipe', 'pipe'] });
server.stdout.setEncoding('utf8').on('data', (d) => { serveOut += d; });
server.stderr.setEncoding('utf8').on('data', (d) => { serveErr += d; });
let serverExited = null;
server.on('exit', (code, signal) => { serverExited = signal || code; });
cleanups.push(async () => {
  if (serverExited === null) {
    server.kill('SIGTERM');
    await new Promise((resolve) => {
      const t = setTimeout(() => { server.kill('SIGKILL'); resolve(); }, 10000);
      server.on('exit', () => { clearTimeout(t); resolve(); });
    });
  }
  await writeFile(path.join(ARTIFACTS, 'serve.stderr.log'), serveErr);
  if (existsSync(accessLog)) await copyFile(accessLog, path.join(ARTIFACTS, 'access.log'));
});

async function waitFor(what, check, ms = 60000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (serverExited !== null) throw new Error(`patledger serve exited (${serverExited}):\n${serveErr}`);
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let base = '';
let root = '';

// Plain HTTP from node, as a gateway or a script would call patledger.
async function http(method, p, { token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h['PRIVATE-TOKEN'] = token;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const res = await fetch(base + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: res.status, data, headers: res.headers };
}
const authStatus = async (token) => (await http('GET', '/api/v4/auth', { token })).status;

const plusDays = (date, n) => new Date(Date.parse(`${date}T00:00:00Z`) + n * 86400000).toISOString().slice(0, 10);

// ---- the browser -------------------------------------------------------------------------

let browser;
const secrets = [];  // every created token: none may be stored, kept in the page or logged

function watch(page, label) {
  page.on('console', (msg) => {
    // Chromium reports every 4xx answer to fetch as "Failed to load resource": the page
    // expects those (wrong token, validation). Anything else (a CSP violation, an
    // exception) is a problem.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      problems.push(`${label} console: ${msg.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`${label} exception: ${e.message}`));
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith('data:')) {
      problems.push(`${label} requested ${url} (only ${base} is allowed)`);
    }
  });
}

async function newPage(label, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, serviceWorkers: 'block' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  watch(page, label);
  cleanups.push(() => context.close());
  shotPage = page;
  return { context, page };
}

// Nothing but the session token in storage, no cookie, no secret in the DOM.
async function assertNoSecretKept(page, context) {
  const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
  const html = await page.content();
  for (const s of secrets) {
    assert.ok(!stored.includes(s), 'a created token is in web storage');
    assert.ok(!html.includes(s), 'a created token is still in the page');
  }
  assert.deepEqual(await context.cookies(), [], 'the page set a cookie');
}

const activeRow = (page, name) => page.locator('#active-table tbody tr', { hasText: name });
const inactiveRow = (page, name) => page.locator('#inactive-table tbody tr', { hasText: name });

async function confirmDialog(page, button, screenshotName) {
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ state: 'visible' });
  assert.equal(await page.locator('#confirm-ok').textContent(), button);
  if (screenshotName) await shot(page, screenshotName, { fullPage: false });
  await page.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden' });
}

async function readNewToken(page) {
  await page.locator('#new-token').waitFor({ state: 'visible' });
  const token = await page.locator('#new-token-value').inputValue();
  assert.match(token, TOKEN_RE);
  assert.equal(await page.locator('#new-token-value').getAttribute('readonly'), '');
  assert.match(await page.locator('#new-token-warning').innerText(), /won't be able to access it again/);
  secrets.push(token);
  return token;
}

try {
  await step('patledger serve starts on a free port and prints the root token', async () => {
    const port = await waitFor('patledger to listen', () =>
      (serveErr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/) || [])[1]);
    base = `http://127.0.0.1:${port}`;
    await waitFor('readiness', async () => {
      try { return (await fetch(`${base}/-/readiness`)).status === 200; } catch { return false; }
    });
    root = serveOut.split('\n')[0].trim();
    assert.match(root, TOKEN_RE, 'no root token on the first line of stdout');
  });

  await step('Debian\'s Chromium starts headless', async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // As root Chromium needs --no-sandbox; the rest keeps it off the network.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    cleanups.push(() => browser.close());
    console.log(`# ${CHROMIUM}: ${browser.version()}, playwright-core, node ${process.version}`);
  });

  const { context: adminContext, page } = await newPage('admin');
  const policy = (await http('GET', '/api/v4/-/policy')).data;

  await step('the page asks for a token, and refuses a wrong one beside the field', async () => {
    const res = await page.goto(`${base}/-/user_settings/personal_access_tokens`);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-security-policy'], /script-src 'self'/);
    await page.locator('#signin').waitFor({ state: 'visible' });
    await shot(page, 'sign-in');
    await page.getByLabel('Personal access token', { exact: true }).fill('glpat-not-a-real-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signin-error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#signin-error').innerText(), /not accepted/);
    assert.equal(await page.locator('#signin-token').getAttribute('aria-invalid'), 'true');
    await shot(page, 'sign-in-refused');
  });

  await step('sign in with the root token (kept in sessionStorage only)', async () => {
    await page.getByLabel('Personal access token', { exact: true }).fill(root);
    await page.keyboard.press('Enter');  // the form submits from the keyboard
    await page.locator('#app').waitFor({ state: 'visible' });
    assert.match(await page.locator('#session-user').innerText(), /Signed in as root \(administrator\)/);
    assert.equal(await page.evaluate(() => Object.values(sessionStorage).join()), root);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(await adminContext.cookies(), []);
    // The scopes come from the server's table, with their descriptions; admins see sudo.
    const scopes = (await http('GET', '/api/v4/-/scopes')).data;
    for (const s of scopes) {
      const box = page.getByRole('checkbox', { name: s.name, exact: true });
      assert.equal(await box.count(), 1, `no checkbox for ${s.name}`);
      assert.equal(await page.locator(`#scope-${s.name}-description`).innerText(), s.description);
    }
    // The date picker: today + 30 days by default, within the policy.
    const expires = page.getByLabel('Expiration date');
    assert.equal(await expires.inputValue(), plusDays(policy.today, 30));
    assert.equal(await expires.getAttribute('min'), plusDays(policy.today, 1));
    assert.equal(await expires.getAttribute('max'), plusDays(policy.today, 365));
    await shot(page, 'signed-in');
  });

  await step('API validation errors appear beside their fields', async () => {
    await page.getByRole('button', { name: 'Create personal access token' }).click();
    await page.locator('#token-name-error').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#token-name-error').innerText(), 'Name is missing');
    assert.equal(await page.getByLabel('Token name').getAttribute('aria-invalid'), 'true');
    await page.getByLabel('Token name').fill('too-late');
    await page.getByRole('checkbox', { name: 'api', exact: true }).check();
    await page.getByLabel('Expiration date').fill(plusDays(policy.today, 400));
    await page.getByRole('button', { name: 'Create personal access token' }).click();
    await page.locator('#token-expires-error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#token-expires-error').innerText(), /Expiration date must be before/);
    assert.ok(await page.locator('#token-name-error').isHidden(), 'the old name error stayed');
    await page.getByRole('checkbox', { name: 'api', exact: true }).uncheck();
    await page.getByLabel('Expiration date').fill(plusDays(policy.today, 30));
    await page.getByRole('button', { name: 'Create personal access token' }).click();
    await page.locator('#token-scopes-error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#token-scopes-error').innerText(), /^Scopes is missing$/);
    await shot(page, 'validation-error');
    assert.equal(await page.locator('#active-table tbody tr', { hasText: 'too-late' }).count(), 0);
  });

  let created = '';
  await step('create a token with two scopes; it is shown once with a Copy button', async () => {
    await page.getByLabel('Token name').fill('ci-deploy');
    await page.getByLabel('Description').fill('Deploys from CI');
    await page.getByRole('checkbox', { name: 'read_api', exact: true }).check();
    await page.getByRole('checkbox', { name: 'write_repository', exact: true }).check();
    await page.getByRole('button', { name: 'Create personal access token' }).click();
    created = await readNewToken(page);
    assert.ok(await page.locator('#token-scopes-error').isHidden());
    await page.getByRole('button', { name: 'Copy' }).click();
    await page.locator('#copy-status', { hasText: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), created);
    const row = activeRow(page, 'ci-deploy');
    assert.equal(await row.count(), 1);
    const text = await row.innerText();
    assert.match(text, /read_api/);
    assert.match(text, /write_repository/);
    assert.match(text, new RegExp(`${plusDays(policy.today, 30)}[\\s\\S]*in 30 days`));
    assert.match(text, /Never/);  // last used
    assert.equal(await row.locator('td.expires-soon').count(), 0);
    await shot(page, 'created');
  });

  await step('the new token authenticates (GET /api/v4/auth from node: 200)', async () => {
    const r = await http('GET', '/api/v4/auth?scope=read_api', { token: created });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-auth-username'), 'root');
  });

  await step('after a reload the token is no longer shown anywhere', async () => {
    await page.reload();
    await page.locator('#app').waitFor({ state: 'visible' });  // still signed in (sessionStorage)
    await activeRow(page, 'ci-deploy').waitFor();
    assert.ok(await page.locator('#new-token').isHidden());
    assert.equal(await page.locator('#new-token-value').inputValue(), '');
    await assertNoSecretKept(page, adminContext);
    await shot(page, 'after-reload');
  });

  await step('revoke it in the page, through the confirmation dialog', async () => {
    await activeRow(page, 'ci-deploy').getByRole('button', { name: 'Revoke token ci-deploy' }).click();
    // Cancel first: nothing happens.
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    await page.keyboard.press('Escape');
    await page.locator('#confirm-dialog').waitFor({ state: 'hidden' });
    assert.equal(await activeRow(page, 'ci-deploy').count(), 1);
    await activeRow(page, 'ci-deploy').getByRole('button', { name: 'Revoke token ci-deploy' }).click();
    await confirmDialog(page, 'Revoke', 'revoke-confirm');
    await inactiveRow(page, 'ci-deploy').waitFor();
    assert.equal(await activeRow(page, 'ci-deploy').count(), 0);
    assert.match(await inactiveRow(page, 'ci-deploy').innerText(), /Revoked \(by its owner\)/);
    await shot(page, 'revoked');
  });

  await step('the revoked token now gets 401', async () => {
    const r = await http('GET', '/api/v4/auth', { token: created });
    assert.equal(r.status, 401);
    assert.match(r.data.error_description, /revoked/);
  });

  await step('rotate a token: the new one is shown once, the old one stops working', async () => {
    await page.getByLabel('Token name').fill('rotate-me');
    await page.getByRole('checkbox', { name: 'read_user', exact: true }).check();
    await page.getByRole('button', { name: 'Create personal access token' }).click();
    const old = await readNewToken(page);
    await page.getByRole('button', { name: 'I have saved it' }).click();
    assert.ok(await page.locator('#new-token').isHidden());
    assert.equal(await authStatus(old), 200);
    await activeRow(page, 'rotate-me').getByRole('button', { name: 'Rotate token rotate-me' }).click();
    await confirmDialog(page, 'Rotate', 'rotate-confirm');
    const rotated = await readNewToken(page);
    assert.notEqual(rotated, old);
    assert.match(await page.locator('#new-token-about').innerText(), /rotated/);
    assert.equal(await authStatus(rotated), 200);
    assert.equal(await authStatus(old), 401);
    // The successor expires in 7 days (the API's default): highlighted as soon.
    const row = activeRow(page, 'rotate-me');
    assert.equal(await row.count(), 1);
    assert.match(await row.innerText(), /in 7 days/);
    assert.equal(await row.locator('td.expires-soon').count(), 1);
    assert.match(await inactiveRow(page, 'rotate-me').innerText(), /Revoked \(rotated\)/);
    await shot(page, 'rotated');
    // The README's picture of the page (docs/tokens-page.png is a copy of it).
    await page.screenshot({ path: path.join(ARTIFACTS, 'tokens-page.png'), fullPage: true });
    await page.reload();
    await activeRow(page, 'rotate-me').waitFor();
    assert.ok(await page.locator('#new-token').isHidden());
    await assertNoSecretKept(page, adminContext);
  });

  await step('a rotation from a stale list is refused by the page, not taken as token reuse', async () => {
    // The API takes the rotation of an already revoked token as reuse of a leaked secret
    // and revokes its successor; a stale list (another tab rotated it) must not do that.
    const made = await http('POST', '/api/v4/user/personal_access_tokens',
                            { token: root, body: { name: 'stale-one', scopes: ['read_user'] } });
    assert.equal(made.status, 201);
    secrets.push(made.data.token);
    await page.reload();
    await activeRow(page, 'stale-one').waitFor();
    const elsewhere = await http('POST', `/api/v4/personal_access_tokens/${made.data.id}/rotate`, { token: root });
    assert.equal(elsewhere.status, 200);
    secrets.push(elsewhere.data.token);
    await activeRow(page, 'stale-one').getByRole('button', { name: 'Rotate token stale-one' }).click();
    await confirmDialog(page, 'Rotate');
    await page.locator('#flash', { hasText: 'no longer active' }).waitFor();
    assert.ok(await page.locator('#new-token').isHidden());
    assert.equal(await authStatus(elsewhere.data.token), 200, 'the successor was revoked');
    await shot(page, 'stale-rotate-refused', { fullPage: false });
  });

  // Another user, through the API with the root token.
  let alice = 0;
  let aliceToken = '';
  let aliceSpare = '';
  await step('an admin sees every user\'s tokens, filters by user and revokes any', async () => {
    const u = await http('POST', '/api/v4/users', { token: root,
      body: { username: 'alice', name: 'Alice Liddell', email: 'alice@example.com' } });
    assert.equal(u.status, 201);
    alice = u.data.id;
    const mk = async (name, scopes) => {
      const r = await http('POST', `/api/v4/users/${alice}/personal_access_tokens`,
                           { token: root, body: { name, scopes, expires_at: plusDays(policy.today, 5) } });
      assert.equal(r.status, 201, JSON.stringify(r.data));
      secrets.push(r.data.token);
      return r.data.token;
    };
    aliceToken = await mk('alice-laptop', ['api']);
    aliceSpare = await mk('alice-spare', ['read_registry']);

    await page.reload();
    await page.locator('#admin').waitFor({ state: 'visible' });
    await page.getByLabel('User', { exact: true }).selectOption({ label: 'alice (Alice Liddell)' });
    const rows = page.locator('#admin-table tbody tr');
    await page.locator('#admin-summary', { hasText: '2 tokens' }).waitFor();
    assert.equal(await rows.count(), 2);
    for (const r of await rows.all()) assert.match(await r.innerText(), /^alice/);
    await page.locator('#admin').scrollIntoViewIfNeeded();
    await shot(page, 'admin-all-users');
    await rows.filter({ hasText: 'alice-spare' })
      .getByRole('button', { name: 'Revoke token alice-spare of alice' }).click();
    await confirmDialog(page, 'Revoke');
    await page.locator('#admin-summary', { hasText: '1 token.' }).waitFor();
    assert.equal(await authStatus(aliceSpare), 401);
    assert.equal(await authStatus(aliceToken), 200);
    await page.getByLabel('State').selectOption('inactive');
    await page.locator('#admin-table tbody tr', { hasText: 'alice-spare' }).waitFor();
    assert.match(await page.locator('#admin-table tbody tr', { hasText: 'alice-spare' }).innerText(),
                 /by an administrator/);
    // The admin's own tables never list another user's tokens.
    assert.equal(await page.locator('#active-table tbody tr', { hasText: 'alice' }).count(), 0);
    await page.getByLabel('State').selectOption('active');
    await page.getByLabel('User', { exact: true }).selectOption({ label: 'All users' });
    await page.locator('#admin-table tbody tr', { hasText: 'rotate-me' }).waitFor();
  });

  await step('lists follow X-Next-Page with per_page=100 (a user with 130 tokens)', async () => {
    const u = await http('POST', '/api/v4/users', { token: root,
      body: { username: 'bob', name: 'Bob', email: 'bob@example.com' } });
    assert.equal(u.status, 201);
    for (let i = 0; i < 130; i += 26) {
      const batch = [];
      for (let j = i; j < i + 26; j++) {
        batch.push(http('POST', `/api/v4/users/${u.data.id}/personal_access_tokens`,
                        { token: root, body: { name: `bulk-${j}`, scopes: ['read_user'] } }));
      }
      for (const r of await Promise.all(batch)) assert.equal(r.status, 201);
    }
    const asked = [];
    const onRequest = (req) => {
      if (req.url().includes(`/personal_access_tokens?user_id=${u.data.id}&`)) asked.push(req.url());
    };
    await page.getByRole('button', { name: 'Refresh' }).click();  // the user list learns of bob
    await page.locator('#admin-user option', { hasText: 'bob (Bob)' }).waitFor({ state: 'attached' });
    page.on('request', onRequest);
    await page.getByLabel('User', { exact: true }).selectOption({ label: 'bob (Bob)' });
    await page.locator('#admin-summary', { hasText: '130 tokens.' }).waitFor();
    page.off('request', onRequest);
    assert.equal(await page.locator('#admin-table tbody tr').count(), 130);
    for (const name of ['bulk-0', 'bulk-129']) {
      assert.equal(await page.locator('#admin-table tbody').getByText(name, { exact: true }).count(), 1);
    }
    const pages = asked.map((a) => new URL(a).searchParams);
    assert.ok(pages.every((q) => q.get('per_page') === '100'), asked.join(' '));
    assert.deepEqual(pages.map((q) => q.get('page')), ['1', '2'], asked.join(' '));
    await page.getByLabel('User', { exact: true }).selectOption({ label: 'All users' });
  });

  await step('sign out forgets the session token', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#signin').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.ok(await page.locator('#app').isHidden());
    await page.reload();
    await page.locator('#signin').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#active-table tbody tr').count(), 0);
  });

  await step('a non-admin sees neither the sudo scope nor other users\' tokens', async () => {
    const { context, page: p } = await newPage('alice');
    await p.goto(`${base}/`);
    await p.getByLabel('Personal access token', { exact: true }).fill(aliceToken);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.locator('#app').waitFor({ state: 'visible' });
    assert.match(await p.locator('#session-user').innerText(), /Signed in as alice with token/);
    assert.doesNotMatch(await p.locator('#session-user').innerText(), /administrator/);
    await activeRow(p, 'alice-laptop').waitFor();
    assert.equal(await p.getByRole('checkbox', { name: 'api', exact: true }).count(), 1);
    assert.equal(await p.getByRole('checkbox', { name: 'sudo', exact: true }).count(), 0);
    assert.equal(await p.locator('#scope-sudo').count(), 0);
    assert.ok(await p.locator('#admin').isHidden());
    const body = await p.locator('body').innerText();
    for (const other of ['ci-deploy', 'rotate-me', 'stale-one', 'bulk-', 'root']) {
      assert.ok(!body.includes(other), `alice's page shows "${other}"`);
    }
    assert.match(await inactiveRow(p, 'alice-spare').innerText(), /by an administrator/);
    // Expiring in 5 days: highlighted.
    assert.equal(await activeRow(p, 'alice-laptop').locator('td.expires-soon').count(), 1);
    assert.match(await activeRow(p, 'alice-laptop').innerText(), /in 5 days/);
    // The API agrees: alice cannot list root's tokens.
    assert.equal((await http('GET', '/api/v4/personal_access_tokens?user_id=1', { token: aliceToken })).status, 401);
    await shot(p, 'non-admin');
    await context.close();
  });

  await step('readable at phone width, every control labelled, usable from the keyboard', async () => {
    const { context, page: p } = await newPage('phone', { width: 390, height: 844 });
    await p.goto(`${base}/`);
    await p.getByLabel('Personal access token', { exact: true }).fill(aliceToken);
    await p.keyboard.press('Enter');
    await activeRow(p, 'alice-laptop').waitFor();
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone's screen`);
    // Every control has an accessible name.
    const unlabelled = await p.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
      .filter((e) => !e.closest('[hidden], dialog:not([open])') && e.type !== 'hidden')
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
      .map((e) => e.id || e.outerHTML));
    assert.deepEqual(unlabelled, []);
    // Keyboard only: Tab to the name field, type, Space on a checkbox, Enter to create.
    await p.locator('#token-name').focus();
    await p.keyboard.type('from-the-keyboard');
    await p.locator('#scope-read_user').focus();
    await p.keyboard.press('Space');
    await p.locator('#token-name').focus();
    await p.keyboard.press('Enter');
    const t = await readNewToken(p);
    assert.equal(await p.evaluate(() => document.activeElement.id), 'new-token-value');
    assert.equal(await authStatus(t), 200);
    await shot(p, 'phone-created', { fullPage: false });
    await shot(p, 'phone');
    await p.locator('#active-heading').scrollIntoViewIfNeeded();
    await p.evaluate(() => document.getElementById('active-heading').scrollIntoView());
    await shot(p, 'phone-tables', { fullPage: false });
    // Revoke from the keyboard: Enter on the button, Enter on the dialog's Revoke.
    await activeRow(p, 'from-the-keyboard').getByRole('button', { name: 'Revoke token from-the-keyboard' }).focus();
    await p.keyboard.press('Enter');
    await p.locator('#confirm-dialog').waitFor({ state: 'visible' });
    assert.equal(await p.evaluate(() => document.activeElement.id), 'confirm-cancel');
    await p.keyboard.press('Tab');
    assert.equal(await p.evaluate(() => document.activeElement.id), 'confirm-ok');
    await p.keyboard.press('Enter');
    await inactiveRow(p, 'from-the-keyboard').waitFor();
    assert.equal(await authStatus(t), 401);
    await context.close();
  });

  await step('no plaintext token in the access log', async () => {
    const log = await readFile(accessLog, 'utf8');
    assert.ok(log.length > 0, 'the access log is empty');
    for (const s of [root, ...secrets]) assert.ok(!log.includes(s.slice(6)), 'a token is in the access log');
  });
} catch (e) {
  console.error(`tokens_page: FAIL: ${e && e.stack ? e.stack : e}`);
  await finish(1);
}
await finish(0);
