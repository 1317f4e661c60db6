// web/app.js: the Access tokens page of patledger (issue 5). Plain ES module, no
// framework, nothing fetched but this server's own API (docs/api.md).
//
// Sign-in: the user pastes a token; it is kept in this tab's sessionStorage and sent in
// the PRIVATE-TOKEN header (no cookies, so no CSRF surface). The secret of a new or
// rotated token lives only in the DOM of the panel that shows it, and is never stored.
// Every text from the server reaches the page through textContent, never as HTML.

const API = '/api/v4';
const SESSION_KEY = 'patledger.session-token';
const PER_PAGE = 100;
const SOON_DAYS = 7;          // expiry within this many days is highlighted
const DEFAULT_LIFETIME = 30;  // default expiry: today + 30 days (within the policy)
const ROTATE_LIFETIME = 7;    // the API's expiry for a rotated token (today + 7 days)

const $ = (id) => document.getElementById(id);

const state = {
  token: null,      // the session token (also in sessionStorage)
  user: null,       // GET /user
  self: null,       // GET /personal_access_tokens/self: the session token's record
  scopes: [],       // GET /-/scopes: [{name, description}]
  policy: null,     // GET /-/policy
  users: new Map(), // admins: id -> user
};

// ---- the API ------------------------------------------------------------------------

// One call to the API. Never throws for an HTTP status; returns {status, ok, data,
// headers}. A network failure gives status 0.
async function call(method, path, { query, body } = {}) {
  const url = new URL(API + path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  const headers = { Accept: 'application/json' };
  if (state.token) headers['PRIVATE-TOKEN'] = state.token;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    return { status: 0, ok: false, data: { message: `The server cannot be reached (${e.message}).` },
             headers: new Headers() };
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  return { status: res.status, ok: res.ok, data, headers: res.headers };
}

// Every page of a token list: per_page=100, following X-Next-Page.
async function listTokens(query) {
  const all = [];
  let page = 1;
  for (let guard = 0; guard < 10000; guard++) {
    const r = await call('GET', '/personal_access_tokens', { query: { ...query, per_page: PER_PAGE, page } });
    if (!r.ok) return r;
    all.push(...(Array.isArray(r.data) ? r.data : []));
    const next = Number.parseInt(r.headers.get('X-Next-Page') || '', 10);
    if (!Number.isInteger(next) || next <= page) break;
    page = next;
  }
  return { status: 200, ok: true, data: all };
}

// The human text of an error answer: {"error":"name is missing"},
// {"message":"400 Bad request - ..."}, {"error":"invalid_token","error_description":...}.
function errorText(r) {
  const d = r.data || {};
  let text = d.error_description || d.message || d.error || `HTTP ${r.status}`;
  if (typeof text !== 'string') text = JSON.stringify(text);
  text = text.replace(/^\d{3} [A-Za-z ]+? - /, '');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// Which form field an API validation error is about: the parameter name it starts
// with ("name is missing", "expires_at is invalid ...") or mentions ("Expiration date
// must be before ...", "at least one scope is required", "scope sudo is only for ...").
function fieldOf(text) {
  const t = text.toLowerCase();
  if (/^name\b/.test(t)) return 'name';
  if (/^description\b/.test(t)) return 'description';
  if (/^(expires_at|expiration date)\b/.test(t)) return 'expires_at';
  if (/^scopes?\b/.test(t)) return 'scopes';
  if (/\bscopes?\b/.test(t)) return 'scopes';
  if (/\bexpires_at\b|\bexpir(y|ation)\b/.test(t)) return 'expires_at';
  if (/\bdescription\b/.test(t)) return 'description';
  if (/\bname\b/.test(t)) return 'name';
  return null;
}

// ---- dates --------------------------------------------------------------------------

const DAY_MS = 86400000;
const pad = (n) => String(n).padStart(2, '0');
const isoDate = (ms) => new Date(ms).toISOString().slice(0, 10);
const parseDate = (s) => Date.parse(`${s}T00:00:00Z`);  // ms, UTC midnight; NaN if bad

// Today's UTC date as the server sees it (falls back to this browser's clock).
function today() {
  return (state.policy && state.policy.today) || isoDate(Date.now());
}
function addDays(date, n) {
  return isoDate(parseDate(date) + n * DAY_MS);
}
function daysUntil(date) {
  return Math.round((parseDate(date) - parseDate(today())) / DAY_MS);
}
function formatInstant(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
         `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

// ---- small DOM helpers --------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return node;
}

function show(node, visible = true) { node.hidden = !visible; }

let flashTimer = 0;
function flash(message, kind = 'info') {
  const f = $('flash');
  f.textContent = message;
  f.className = `flash ${kind}`;
  show(f, true);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => show(f, false), 15000);
}

function setError(id, message) {
  const node = $(id);
  node.textContent = message || '';
  show(node, Boolean(message));
}

// ---- the confirmation dialog --------------------------------------------------------

function confirmAction({ title, text, action }) {
  const dialog = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = action;
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-ok').removeEventListener('click', onOk);
      $('confirm-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = () => done(true);
    const onCancel = () => done(false);
    const onClose = () => done(false);  // Escape
    $('confirm-ok').addEventListener('click', onOk);
    $('confirm-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    $('confirm-cancel').focus();  // the safe choice is the default
  });
}

// ---- the new token panel (shown once) -----------------------------------------------

function showNewToken(token, about) {
  show($('flash'), false);  // an older message would read as about this token
  $('new-token-about').textContent = about;
  $('new-token-value').value = token.token;
  $('copy-status').textContent = '';
  show($('new-token'), true);
  $('new-token').scrollIntoView({ block: 'start' });
  $('new-token-value').focus();
  $('new-token-value').select();
}

function clearNewToken() {
  $('new-token-value').value = '';
  $('new-token-about').textContent = '';
  $('copy-status').textContent = '';
  show($('new-token'), false);
}

async function copyToken() {
  const input = $('new-token-value');
  let copied = false;
  try {
    await navigator.clipboard.writeText(input.value);
    copied = true;
  } catch {
    // No clipboard API (plain http on another host): the old way, from the selection.
    input.focus();
    input.select();
    try { copied = document.execCommand('copy'); } catch { copied = false; }
  }
  $('copy-status').textContent = copied
    ? 'Copied to the clipboard.'
    : 'Could not copy: the token is selected, copy it with Ctrl+C (⌘C).';
}

// ---- sign in and out ----------------------------------------------------------------

function showSignedOut(notice) {
  show($('loading'), false);
  show($('app'), false);
  show($('app-intro'), false);
  show($('session'), false);
  show($('signin'), true);
  const n = $('signin-notice');
  n.textContent = notice || '';
  show(n, Boolean(notice));
  $('signin-token').value = '';
  setError('signin-error', '');
  $('signin-token').removeAttribute('aria-invalid');
}

// Forgets the session everywhere. keepNewToken: a rotation of the session's own token
// leaves the new secret on screen (it is the only place it exists).
function endSession(notice, { keepNewToken = false } = {}) {
  sessionStorage.removeItem(SESSION_KEY);
  mineSeq += 1;  // answers still on their way belong to the old session: drop them
  adminSeq += 1;
  state.token = null;
  state.user = null;
  state.self = null;
  state.users.clear();
  if (!keepNewToken) clearNewToken();
  for (const id of ['active-table', 'inactive-table', 'admin-table']) {
    $(id).tBodies[0].replaceChildren();
  }
  $('create-form').reset();
  clearFieldErrors();
  $('admin-user').replaceChildren(el('option', { value: '', text: 'All users' }));
  show($('flash'), false);
  showSignedOut(notice);
  if (!keepNewToken) $('signin-token').focus();
}

// After a 401: did the session token stop working (revoked, expired, owner blocked)? If
// so the session ends. A 401 can also be about something else: rotating a token that
// was already revoked answers 401 (the API's reuse rule) while the session is fine.
async function sessionLost() {
  const r = await call('GET', '/user');
  if (r.status !== 401) return false;
  endSession(r.data && r.data.error_description
    ? `Your session ended: ${r.data.error_description}`
    : 'Your session token is no longer valid. Sign in again.');
  return true;
}

async function signIn(token, { restoring = false } = {}) {
  state.token = token;
  const r = await call('GET', '/user');
  if (!r.ok) {
    state.token = null;
    sessionStorage.removeItem(SESSION_KEY);
    let message;
    if (r.status === 401) {
      message = r.data && r.data.error_description
        ? `This token was not accepted: ${r.data.error_description}`
        : 'This token was not accepted: it is unknown, malformed, or its owner is blocked.';
    } else if (r.status === 403) {
      message = 'This token cannot read its user: it needs the read_user, read_api or api scope.';
    } else {
      message = errorText(r);
    }
    showSignedOut(restoring ? 'Your session ended. Sign in again.' : '');
    setError('signin-error', message);
    $('signin-token').setAttribute('aria-invalid', 'true');
    $('signin-token').focus();
    return false;
  }
  sessionStorage.setItem(SESSION_KEY, token);
  state.user = r.data;
  const self = await call('GET', '/personal_access_tokens/self');
  state.self = self.ok ? self.data : null;

  show($('loading'), false);
  show($('signin'), false);
  $('signin-token').value = '';
  $('session-user').textContent = `Signed in as ${state.user.username}` +
    (state.user.is_admin ? ' (administrator)' : '') +
    (state.self ? ` with token “${state.self.name}”` : '');
  show($('session'), true);
  show($('app-intro'), true);
  show($('app'), true);
  renderScopes();
  setUpExpiry();
  show($('admin'), Boolean(state.user.is_admin));
  await refresh();
  return true;
}

// ---- the create form ----------------------------------------------------------------

function renderScopes() {
  const list = $('scope-list');
  list.replaceChildren();
  for (const scope of state.scopes) {
    // sudo acts as any user: only administrators may hold it, so only they see it.
    if (scope.name === 'sudo' && !(state.user && state.user.is_admin)) continue;
    const id = `scope-${scope.name}`;
    list.append(el('div', { class: 'scope' },
      el('input', { type: 'checkbox', id, name: 'scopes', value: scope.name,
                    'aria-describedby': `${id}-description` }),
      el('label', { for: id }, el('code', { text: scope.name })),
      el('p', { id: `${id}-description`, class: 'hint', text: scope.description })));
  }
}

function setUpExpiry() {
  const p = state.policy || {};
  const input = $('token-expires');
  const min = p.min_expires_at || addDays(today(), 1);
  const max = p.max_expires_at || '';
  input.min = min;
  if (max) input.max = max; else input.removeAttribute('max');
  input.required = Boolean(p.require_expiry);
  let fallback = addDays(today(), DEFAULT_LIFETIME);
  if (max && fallback > max) fallback = max;
  input.value = fallback;
  const hint = [];
  if (max) hint.push(`From ${min} to ${max} (at most ${p.max_lifetime_days} days ahead).`);
  else hint.push(`From ${min}.`);
  if (!p.require_expiry) hint.push('Leave it empty for a token that does not expire.');
  hint.push('The token stops working at 00:00 UTC on this date.');
  $('token-expires-hint').textContent = hint.join(' ');
}

const FIELD_IDS = {
  name: ['token-name', 'token-name-error'],
  description: ['token-description', 'token-description-error'],
  expires_at: ['token-expires', 'token-expires-error'],
  scopes: ['scopes-fieldset', 'token-scopes-error'],
};

function clearFieldErrors() {
  for (const [input, error] of Object.values(FIELD_IDS)) {
    $(input).removeAttribute('aria-invalid');
    setError(error, '');
  }
  setError('create-error', '');
}

function showFieldError(field, message) {
  const [input, error] = FIELD_IDS[field];
  $(input).setAttribute('aria-invalid', 'true');
  setError(error, message);
  const target = field === 'scopes' ? $('scope-list').querySelector('input') : $(input);
  if (target) target.focus();
}

async function onCreate(event) {
  event.preventDefault();
  clearFieldErrors();
  show($('flash'), false);
  const form = $('create-form');
  // An empty name is left out, so the API answers "name is missing" (it checks that first).
  const body = {
    name: $('token-name').value.trim() || undefined,
    description: $('token-description').value.trim(),
    scopes: [...form.querySelectorAll('input[name="scopes"]:checked')].map((c) => c.value),
  };
  if ($('token-expires').value) body.expires_at = $('token-expires').value;
  const button = $('create-submit');
  button.disabled = true;
  try {
    const r = await call('POST', '/user/personal_access_tokens', { body });
    if (r.status === 401 && await sessionLost()) return;
    if (!r.ok) {
      const text = errorText(r);
      if (r.data && r.data.error === 'insufficient_scope') {
        setError('create-error', `Your session token cannot create tokens: it needs the ${r.data.scope} scope.`);
        return;
      }
      const field = fieldOf(text);
      if (field) showFieldError(field, text);
      else setError('create-error', text);
      return;
    }
    form.reset();
    setUpExpiry();
    showNewToken(r.data, `Token “${r.data.name}” was created with the scopes ` +
      `${r.data.scopes.join(', ')}` + (r.data.expires_at ? `, expiring on ${r.data.expires_at}.` : '.'));
    await refresh();
  } finally {
    button.disabled = false;
  }
}

// ---- the tables ---------------------------------------------------------------------

function scopesCell(t) {
  return el('td', { 'data-label': 'Scopes' },
    el('ul', { class: 'chips' }, t.scopes.map((s) => el('li', { class: 'chip', text: s }))));
}

function nameCell(t) {
  const isSession = state.self && state.self.id === t.id;
  return el('th', { scope: 'row', 'data-label': 'Token name' },
    el('span', { class: 'token-name', text: t.name }),
    isSession ? el('span', { class: 'badge', text: 'this session' }) : null,
    t.description ? el('span', { class: 'description', text: t.description }) : null);
}

function expiresCell(t) {
  const td = el('td', { 'data-label': 'Expires' });
  if (!t.expires_at) {
    td.append(el('span', { text: 'Never' }));
    return td;
  }
  td.append(el('time', { datetime: t.expires_at, text: t.expires_at }));
  const n = daysUntil(t.expires_at);
  if (t.active) {
    const rel = n <= 0 ? 'today' : n === 1 ? 'in 1 day' : `in ${n} days`;
    const soon = n <= SOON_DAYS;
    td.append(el('span', { class: soon ? 'relative soon' : 'relative', text: rel }));
    if (soon) td.classList.add('expires-soon');
  } else if (!t.revoked) {
    td.append(el('span', { class: 'relative', text: 'expired' }));
  }
  return td;
}

function createdCell(t) {
  return el('td', { 'data-label': 'Created' },
    el('time', { datetime: t.created_at, text: formatInstant(t.created_at) }));
}

function lastUsedCell(t) {
  return el('td', { 'data-label': 'Last used' },
    t.last_used_at ? el('time', { datetime: t.last_used_at, text: formatInstant(t.last_used_at) })
                   : el('span', { class: 'muted', text: 'Never' }));
}

const REVOKE_REASONS = {
  by_owner: 'by its owner',
  by_admin: 'by an administrator',
  rotated: 'rotated',
  family_reuse: 'reuse of a rotated token',
  reported_leaked: 'reported leaked',
};

function statusText(t) {
  if (t.active) return 'Active';
  if (t.revoked) {
    const why = REVOKE_REASONS[t.revoke_reason] || t.revoke_reason || '';
    const when = t.revoked_at ? ` ${formatInstant(t.revoked_at)}` : '';
    return `Revoked${why ? ` (${why})` : ''}${when}` +
      (t.rotated_to ? ` — replaced by token #${t.rotated_to}` : '');
  }
  return 'Expired';
}

function statusCell(t) {
  return el('td', { 'data-label': 'Status' },
    el('span', { class: t.active ? 'status active' : 'status inactive', text: statusText(t) }));
}

function actionsCell(t, { rotate }) {
  return el('td', { class: 'actions', 'data-label': 'Actions' },
    rotate ? el('button', { type: 'button', class: 'secondary', text: 'Rotate',
                            'aria-label': `Rotate token ${t.name}`, onclick: () => onRotate(t) }) : null,
    el('button', { type: 'button', class: 'danger', text: 'Revoke',
                   'aria-label': `Revoke token ${t.name}`, onclick: () => onRevoke(t) }));
}

function renderMine(tokens) {
  const active = tokens.filter((t) => t.active);
  const inactive = tokens.filter((t) => !t.active);
  $('active-table').tBodies[0].replaceChildren(...active.map((t) =>
    el('tr', { dataset: { tokenId: t.id } },
      nameCell(t), scopesCell(t), createdCell(t), expiresCell(t), lastUsedCell(t),
      actionsCell(t, { rotate: true }))));
  $('inactive-table').tBodies[0].replaceChildren(...inactive.map((t) =>
    el('tr', { dataset: { tokenId: t.id } },
      nameCell(t), scopesCell(t), createdCell(t), expiresCell(t), lastUsedCell(t), statusCell(t))));
  $('active-count').textContent = String(active.length);
  $('inactive-count').textContent = String(inactive.length);
  show($('active-table'), active.length > 0);
  show($('active-empty'), active.length === 0);
  show($('inactive-table'), inactive.length > 0);
  show($('inactive-empty'), inactive.length === 0);
}

// Each refresh is numbered: an answer that arrives after a newer refresh started (a
// filter changed meanwhile) is dropped, so the tables always show the latest request.
let mineSeq = 0;
let adminSeq = 0;

async function refreshMine() {
  const seq = ++mineSeq;
  const r = await listTokens({ user_id: state.user.id });
  if (seq !== mineSeq || !state.user) return false;
  if (r.status === 401 && await sessionLost()) return false;
  if (!r.ok) {
    const why = r.data && r.data.error === 'insufficient_scope'
      ? `Your session token cannot list tokens: it needs the ${r.data.scope} scope.`
      : errorText(r);
    setError('active-error', why);
    renderMine([]);
    return true;
  }
  setError('active-error', '');
  renderMine(r.data);
  return true;
}

async function loadUsers() {
  const r = await call('GET', '/users');
  if (!r.ok) return;
  state.users.clear();
  for (const u of r.data) state.users.set(u.id, u);
  const select = $('admin-user');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '', text: 'All users' }),
    ...[...state.users.values()].map((u) =>
      el('option', { value: String(u.id), text: `${u.username} (${u.name})` })));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

async function refreshAdmin() {
  if (!state.user || !state.user.is_admin) return;
  const seq = ++adminSeq;
  await loadUsers();
  if (seq !== adminSeq) return;
  const query = { user_id: $('admin-user').value, state: $('admin-state').value };
  const r = await listTokens(query);
  if (seq !== adminSeq || !state.user) return;
  if (r.status === 401 && await sessionLost()) return;
  if (!r.ok) {
    setError('admin-error', errorText(r));
    $('admin-table').tBodies[0].replaceChildren();
    return;
  }
  setError('admin-error', '');
  $('admin-table').tBodies[0].replaceChildren(...r.data.map((t) => {
    const owner = state.users.get(t.user_id);
    return el('tr', { dataset: { tokenId: t.id, userId: t.user_id } },
      el('td', { 'data-label': 'User', text: owner ? owner.username : `#${t.user_id}` }),
      nameCell(t), scopesCell(t), createdCell(t), expiresCell(t), statusCell(t),
      t.active ? el('td', { class: 'actions', 'data-label': 'Actions' },
        el('button', { type: 'button', class: 'danger', text: 'Revoke',
                       'aria-label': `Revoke token ${t.name} of ${owner ? owner.username : t.user_id}`,
                       onclick: () => onRevoke(t, 'admin-heading') }))
               : el('td', { 'data-label': 'Actions' }));
  }));
  const n = r.data.length;
  $('admin-summary').textContent = `${n} token${n === 1 ? '' : 's'}.`;
}

async function refresh() {
  const p = await call('GET', '/-/policy');
  if (p.ok) state.policy = p.data;
  if (await refreshMine()) await refreshAdmin();
}

// ---- revoke and rotate --------------------------------------------------------------

function ownerSuffix(t) {
  if (!state.user || t.user_id === state.user.id) return '';
  const owner = state.users.get(t.user_id);
  return ` of ${owner ? owner.username : `user ${t.user_id}`}`;
}

async function onRevoke(t, focusAfter = 'active-heading') {
  const isSession = state.self && state.self.id === t.id;
  const ok = await confirmAction({
    title: 'Revoke token?',
    text: `Revoke the token “${t.name}”${ownerSuffix(t)}? Anything using it stops working at ` +
          'once. This cannot be undone.' +
          (isSession ? ' You are signed in with this token: you will be signed out.' : ''),
    action: 'Revoke',
  });
  if (!ok) return;
  const r = await call('DELETE', `/personal_access_tokens/${t.id}`);
  if (isSession && (r.ok || r.status === 401)) {
    endSession('You revoked the token you were signed in with.');
    return;
  }
  if (r.status === 401 && await sessionLost()) return;
  if (!r.ok) { flash(`Could not revoke “${t.name}”: ${errorText(r)}`, 'error'); return; }
  flash(`The token “${t.name}”${ownerSuffix(t)} was revoked.`, 'success');
  await refresh();
  $(focusAfter).focus();
}

async function onRotate(t) {
  const isSession = state.self && state.self.id === t.id;
  const ok = await confirmAction({
    title: 'Rotate token?',
    text: `Rotate the token “${t.name}”? It is revoked now, and a new token with the same ` +
          `name and scopes is created, expiring on ${addDays(today(), ROTATE_LIFETIME)}. ` +
          'Update whatever uses the old one.' +
          (isSession ? ' You are signed in with this token: you will be signed out.' : ''),
    action: 'Rotate',
  });
  if (!ok) return;
  // Rotating a token that is already revoked (from a stale list: another tab rotated or
  // revoked it) is taken by the API as reuse of a leaked secret and revokes the tokens
  // rotated from it. Check it is still active first.
  const now = await call('GET', `/personal_access_tokens/${t.id}`);
  if (now.ok && !now.data.active) {
    flash(`“${t.name}” is no longer active (revoked or rotated elsewhere): nothing was rotated.`, 'error');
    await refresh();
    return;
  }
  const r = await call('POST', `/personal_access_tokens/${t.id}/rotate`);
  if (!r.ok) {
    if (r.status === 401 && await sessionLost()) return;
    flash(r.status === 401
      ? `Could not rotate “${t.name}”: it was already revoked, so the server treated this as ` +
        'reuse of a leaked token and revoked the tokens rotated from it.'
      : `Could not rotate “${t.name}”: ${errorText(r)}`, 'error');
    await refresh();
    return;
  }
  const about = `The token “${t.name}” was rotated: the old one no longer works. The new ` +
    `token expires on ${r.data.expires_at || 'never'}.`;
  if (isSession) {
    endSession('You rotated the token you were signed in with: sign in with the new one.',
               { keepNewToken: true });
    showNewToken(r.data, about);
    return;
  }
  showNewToken(r.data, about);
  await refresh();
}

// ---- start --------------------------------------------------------------------------

async function loadPublicInfo() {
  // While the server replays its ledger it answers 503 with Retry-After: wait for it.
  for (let attempt = 0; ; attempt++) {
    const [s, p] = await Promise.all([call('GET', '/-/scopes'), call('GET', '/-/policy')]);
    if (s.ok && p.ok) {
      state.scopes = s.data;
      state.policy = p.data;
      return;
    }
    $('loading').textContent = `The server is not ready (${errorText(s.ok ? p : s)}); retrying…`;
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * (attempt + 1), 5000)));
  }
}

function wire() {
  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('signin-token').value.trim();
    if (!token) {
      setError('signin-error', 'Paste a personal access token.');
      $('signin-token').setAttribute('aria-invalid', 'true');
      $('signin-token').focus();
      return;
    }
    $('signin-submit').disabled = true;
    try { await signIn(token); } finally { $('signin-submit').disabled = false; }
  });
  $('sign-out').addEventListener('click', () => endSession('You are signed out.'));
  $('create-form').addEventListener('submit', onCreate);
  $('copy-token').addEventListener('click', copyToken);
  $('dismiss-token').addEventListener('click', clearNewToken);
  $('admin-user').addEventListener('change', refreshAdmin);
  $('admin-state').addEventListener('change', refreshAdmin);
  $('admin-refresh').addEventListener('click', refreshAdmin);
  // Leaving the page must not keep the secret in the back/forward cache.
  window.addEventListener('pagehide', clearNewToken);
  for (const id of ['active-heading', 'inactive-heading', 'admin-heading']) {
    $(id).tabIndex = -1;
  }
}

async function start() {
  wire();
  await loadPublicInfo();
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) await signIn(saved, { restoring: true });
  else showSignedOut();
  document.body.dataset.ready = 'true';  // for tests: the first render is done
}

start();
