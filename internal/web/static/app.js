// The Encryption page: sign-in, key health, alerts, the setup steps with the
// key check, and the enablement job's progress. Everything comes from the
// service's API with the signed-in administrator's own credentials.

import { APIError, Client, paths } from './api.js';
import { checkKeyIdentifier } from './keyid.js';
import * as aws from './aws.js';
import { announce, errorBody, facts, h, replace, steps, time } from './dom.js';
import { loadAudit, loadHistory, setupHistory } from './history.js';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'cmk.session';

// Poll quickly while a job runs so its progress moves visibly, slowly
// otherwise; the Re-check button gives an immediate answer on demand.
const POLL_ACTIVE_MS = 1000;
const POLL_IDLE_MS = 5000;

const ACTIVE_STATUSES = new Set(['NEW', 'RUNNING', 'UPDATE_EXISTING_RESOURCES']);

const healthStates = {
  SYSTEM_MANAGED: { label: 'System-managed', tone: 'neutral', text: 'Your data is encrypted with keys the platform manages for you. You can switch to a key you hold in your own Azure key vault or AWS KMS with the steps below.' },
  HEALTHY: { label: 'Healthy', tone: 'ok', text: 'Your data is encrypted with your own key, and the platform can use it.' },
  DEGRADED: { label: 'Degraded', tone: 'warn', text: 'Your data can still be read, but the key cannot protect new data keys. New sandboxes and some writes may fail until this is fixed.' },
  COASTING: { label: 'Coasting', tone: 'warn', text: 'The key vault cannot be reached right now. Your data stays available for a limited grace period; if the vault is still unreachable when it ends, access to your data is refused.' },
  REVOKED: { label: 'Revoked', tone: 'bad', text: 'The platform has lost access to your key. Every read and write of your data is refused until access is restored.' },
};

const jobStatuses = {
  NEW: { label: 'Queued', tone: 'info', text: 'The request was accepted and will start in a moment.' },
  RUNNING: { label: 'Checking access', tone: 'info', text: 'The platform is checking that it can reach your vault and use your key.' },
  UPDATE_EXISTING_RESOURCES: { label: 'Applying key', tone: 'info', text: 'Your key works. The platform is now re-wrapping the data keys of every store in every sandbox with it.' },
  COMPLETED: { label: 'Completed', tone: 'ok', text: 'Customer-managed keys are on. All your data is protected by your key.' },
  FAILED: { label: 'Failed', tone: 'bad', text: 'Enablement stopped and nothing was changed. Fix the problem below, then submit a new configuration.' },
};

const checkMarks = {
  PASSED: { mark: '✓', cls: 'ok', word: 'Passed' },
  FAILED: { mark: '✗', cls: 'bad', word: 'Failed' },
  ERROR: { mark: '!', cls: 'bad', word: 'Could not run' },
  SKIPPED: { mark: '–', cls: 'skip', word: 'Skipped' },
};

const state = {
  client: null,
  health: null,
  configs: [],
  alertsOpen: [],
  alertsResolved: [],
  webhooks: [],
  pollTimer: 0,
  jobFinished: false,
  generation: 0, // bumps on sign-in/out so stale responses are dropped
  seen: { healthState: '', jobKey: '', openIds: null },
  // passedKey is the key identifier (as typed, trimmed) whose check last
  // passed: Enable is offered for that key only.
  passedKey: '',
  resolvedOpen: false, // the reader opened the resolved alerts
};

// ---------- views ----------

function show(view) {
  $('signin').hidden = view !== 'signin';
  $('no-permission').hidden = view !== 'no-permission';
  $('console').hidden = view !== 'console';
  $('session').hidden = view === 'signin';
  if (state.client) $('session-org').textContent = state.client.creds.org;
}

function badge(tone, text, attrs) {
  return h('span', { class: `badge ${tone}`, ...(attrs || {}) }, text);
}

// ---------- sign-in ----------

function saveSession(creds) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(creds));
}

function loadSession() {
  try {
    const c = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    if (c && c.org && c.apiKey && c.token) return c;
  } catch { /* ignore a damaged entry */ }
  return null;
}

function showSignIn(err) {
  stopPolling();
  state.client = null;
  state.generation++;
  const box = $('signin-error');
  if (err) replace(box, errorBody(err));
  box.hidden = !err;
  show('signin');
}

async function signIn(creds) {
  const gen = ++state.generation;
  stopPolling();
  state.client = new Client(creds);
  state.passedKey = ''; // a check passed for another sign-in offers nothing here
  replace($('preflight-body'));
  state.seen = { healthState: '', jobKey: '', openIds: null };
  let app;
  try {
    app = await state.client.get(paths.appRegistration);
  } catch (err) {
    if (gen !== state.generation) return;
    if (err instanceof APIError && err.permissionMissing) {
      saveSession(creds);
      showNoPermission(err);
      return;
    }
    sessionStorage.removeItem(SESSION_KEY);
    showSignIn(err);
    return;
  }
  if (gen !== state.generation) return;
  saveSession(creds);
  renderApp(app);
  show('console');
  $('main').focus();
  announce(`Signed in to org ${creds.org}.`);
  await refresh();
  loadAudit();
  schedule();
}

function showNoPermission(err) {
  stopPolling();
  $('noperm-detail').textContent = err && err.detail ? err.detail : '';
  show('no-permission');
  $('main').focus();
  announce('You need the Manage Customer Managed Key permission to see this page.');
}

function signOut() {
  sessionStorage.removeItem(SESSION_KEY);
  aws.signedOut();
  $('in-token').value = '';
  showSignIn(null);
  $('in-org').focus();
  announce('Signed out.');
}

async function devLogin() {
  const btn = $('dev-login');
  btn.disabled = true;
  try {
    const res = await fetch('/ui/api/dev-login', { method: 'POST', headers: { Accept: 'application/json' }, credentials: 'omit', cache: 'no-store' });
    const body = await res.json().catch(() => null);
    if (!res.ok || !body) throw new APIError(res.status, body || { title: 'Dev login failed' });
    $('in-org').value = body.org;
    $('in-apikey').value = body.apiKey;
    $('in-token').value = '';
    await signIn({ org: body.org, apiKey: body.apiKey, token: body.token });
  } catch (err) {
    showSignIn(err instanceof APIError ? err : new APIError(0, { title: 'Dev login failed', detail: String(err) }));
  } finally {
    btn.disabled = false;
  }
}

function onSignInSubmit(ev) {
  ev.preventDefault();
  const creds = { org: $('in-org').value.trim(), apiKey: $('in-apikey').value.trim(), token: $('in-token').value.trim().replace(/^Bearer\s+/i, '') };
  const missing = [['in-org', 'org id', creds.org], ['in-apikey', 'API key', creds.apiKey], ['in-token', 'access token', creds.token]].filter(([, , v]) => !v);
  for (const id of ['in-org', 'in-apikey', 'in-token']) $(id).removeAttribute('aria-invalid');
  if (missing.length > 0) {
    for (const [id] of missing) $(id).setAttribute('aria-invalid', 'true');
    const err = new APIError(0, { title: 'Fill in every field', detail: `Missing: ${missing.map(([, n]) => n).join(', ')}.` });
    replace($('signin-error'), errorBody(err));
    $('signin-error').hidden = false;
    $(missing[0][0]).focus();
    return;
  }
  signIn(creds);
}

// ---------- polling ----------

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = 0;
}

function schedule() {
  stopPolling();
  if (!state.client) return;
  const delay = applying() ? POLL_ACTIVE_MS : POLL_IDLE_MS;
  state.pollTimer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    schedule();
  }, delay);
}

// handleError deals with the errors every call can get; it returns true when
// the page changed view and the caller should stop.
function handleError(err) {
  if (!(err instanceof APIError)) return false;
  if (err.permissionMissing) {
    showNoPermission(err);
    return true;
  }
  if (err.signInNeeded) {
    sessionStorage.removeItem(SESSION_KEY);
    showSignIn(new APIError(401, { title: 'Please sign in again', detail: err.detail || 'Your access token is no longer accepted.', hint: 'Paste a fresh access token.' }));
    return true;
  }
  return false;
}

async function refresh() {
  const gen = state.generation;
  await Promise.all([loadHealth(gen), loadConfigs(gen), loadAlerts(gen), loadWebhooks(gen), loadHistory()]);
  if (gen !== state.generation) return;
  if (state.jobFinished) {
    // The key took over (or the job stopped) while health was being read.
    state.jobFinished = false;
    await loadHealth(gen);
  }
  renderSetup();
}

async function call(gen, fn, onError) {
  try {
    const v = await fn();
    return gen === state.generation ? { ok: true, v } : { ok: false };
  } catch (err) {
    if (gen !== state.generation) return { ok: false };
    if (!handleError(err) && onError) onError(err);
    return { ok: false };
  }
}

// ---------- health ----------

async function loadHealth(gen) {
  const r = await call(gen, () => state.client.get(paths.health), (err) => {
    replace($('health-body'), h('div', { class: 'notice bad', role: 'alert' }, errorBody(err)));
  });
  if (r.ok) renderHealth(r.v);
}

function renderHealth(hv) {
  state.health = hv;
  const st = healthStates[hv.state] || { label: hv.state, tone: 'neutral', text: '' };
  if (state.seen.healthState && state.seen.healthState !== hv.state) {
    announce(`Key state changed to ${st.label}.`);
  }
  state.seen.healthState = hv.state;
  $('recheck').hidden = hv.state === 'SYSTEM_MANAGED';

  const customer = hv.state !== 'SYSTEM_MANAGED';
  const parts = [
    h('p', { class: 'state-line' },
      h('span', { text: customer ? (hv.aws ? 'Customer-managed key (AWS KMS)' : 'Customer-managed key (Azure Key Vault)') : 'System-managed key' }), ' ',
      badge(st.tone, st.label, { id: 'health-state', 'data-state': hv.state })),
    h('p', { text: applying() && hv.state === 'HEALTHY' ? 'Your key is in place and the platform can use it. It is being applied to your data now; follow the progress under Enablement.' : st.text }),
  ];
  if (customer) {
    if (hv.dataBlocked) {
      parts.push(h('div', { class: 'notice bad', id: 'data-blocked' }, h('p', {}, h('strong', { text: 'Your data is unavailable.' }), ' Every read and write of this org\'s data is refused until the key works again.')));
    }
    if (hv.state !== 'HEALTHY' && (hv.cause || hv.message || (hv.remedy && hv.remedy.length))) {
      parts.push(h('div', { class: `notice ${st.tone === 'bad' ? 'bad' : 'warn'}`, id: 'health-problem' },
        h('p', {}, h('strong', { text: 'What was found: ' }), hv.message || 'The last check failed.'),
        hv.cause ? h('p', {}, 'Cause: ', h('code', { text: hv.cause })) : null,
        hv.remedy && hv.remedy.length ? [h('p', {}, h('strong', { text: 'How to fix it:' })), steps(hv.remedy, { id: 'health-remedy' })] : null,
        h('p', { text: 'Access comes back by itself at the next check after the problem is fixed; nothing is lost.' })));
    }
    parts.push(aws.healthFacts(hv) || facts([
      ['Key vault', h('code', { text: hv.keyVaultUri || '—', id: 'health-vault' })],
      ['Key name', h('code', { text: hv.keyName || '—', id: 'health-key' })],
      ['Key version in use', h('code', { text: hv.keyVersion || '—', id: 'health-version' })],
      ['In this state since', time(hv.since)],
      ['Last check', time(hv.lastCheck)],
      ['Last successful check', time(hv.lastOk)],
      ['Next check', time(hv.nextCheck)],
      hv.coastingUntil ? ['Data served until (unless the vault answers)', time(hv.coastingUntil)] : null,
    ]));
    if (hv.rotation) {
      const rot = hv.rotation;
      parts.push(h('div', { class: 'notice info', id: 'rotation' },
        h('p', {}, h('strong', { text: 'Key rotation in progress. ' }), 'A new key version was found: ', h('code', { text: rot.targetVersion }), '. Data keys are being re-wrapped with it in the background; your data stays available, and older versions stay in use until this is done.'),
        progress('rotation-progress', rot.dataKeysRewrapped, rot.dataKeysTotal)));
    }
  }
  replace($('health-body'), parts);
  renderRevocation(hv.revocation);
}

function progress(id, done, total) {
  const label = total > 0 ? `${done} of ${total} data keys re-wrapped` : 'Counting data keys…';
  return [
    h('label', { for: id, class: 'progress-label', text: label }),
    total > 0 ? h('progress', { id, max: total, value: done }, `${Math.round((100 * done) / total)}%`) : h('progress', { id }),
  ];
}

async function recheck() {
  const btn = $('recheck');
  const gen = state.generation;
  btn.disabled = true;
  btn.textContent = 'Checking…';
  const r = await call(gen, () => state.client.post(paths.recheck), (err) => {
    replace($('health-body'), h('div', { class: 'notice bad', role: 'alert' }, errorBody(err)));
  });
  btn.disabled = false;
  btn.textContent = 'Re-check now';
  if (!r.ok) return;
  state.seen.healthState = ''; // announce the result even when unchanged
  renderHealth(r.v);
  announce(`Key checked: ${(healthStates[r.v.state] || { label: r.v.state }).label}.`);
  await loadAlerts(gen);
}

// ---------- revocation ----------

function renderRevocation(rv) {
  if (!rv) return;
  replace($('revocation-body'),
    rv.explanation ? h('p', { id: 'revocation-explanation', text: rv.explanation }) : null,
    facts([
      rv.checkInterval ? ['Key checked every', humanDuration(rv.checkInterval)] : null,
      rv.grace ? ['Grace if the vault is unreachable', humanDuration(rv.grace)] : null,
    ]));
}

// humanDuration turns a Go duration ("1m30s", "300ms") into words.
function humanDuration(s) {
  const units = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, us: 1e-3, 'µs': 1e-3, ns: 1e-6 };
  let ms = 0;
  let matched = false;
  for (const [, n, u] of String(s).matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g)) {
    ms += Number(n) * units[u];
    matched = true;
  }
  if (!matched) return String(s);
  const plural = (n, w) => `${n} ${w}${n === 1 ? '' : 's'}`;
  if (ms < 1000) return plural(Math.round(ms), 'millisecond');
  if (ms < 60e3) return plural(Math.round(ms / 100) / 10, 'second');
  if (ms < 3600e3) {
    const m = Math.floor(ms / 60e3);
    const sec = Math.round((ms % 60e3) / 1000);
    return sec ? `${plural(m, 'minute')} ${plural(sec, 'second')}` : plural(m, 'minute');
  }
  const hr = Math.floor(ms / 3600e3);
  const m = Math.round((ms % 3600e3) / 60e3);
  return m ? `${plural(hr, 'hour')} ${plural(m, 'minute')}` : plural(hr, 'hour');
}

// ---------- app registration ----------

function renderApp(app) {
  const link = app.applicationRedirectUrl || '';
  const tenants = app.boundTenants || [];
  replace($('app-body'),
    facts([
      ['Application name', h('code', { text: app.name || '—' })],
      ['Application (client) id', h('code', { text: app.applicationId || '—', id: 'app-id' })],
      ['Azure tenants bound to this org', tenants.length
        ? h('span', { id: 'bound-tenants' }, tenants.map((t, i) => [i ? ', ' : '', h('code', { text: t })]))
        : h('span', { id: 'bound-tenants', text: 'None yet: consent with the link below.' })],
    ]),
    h('div', { class: 'field' },
      h('label', { for: 'consent-url', text: 'Admin consent link' }),
      h('div', { class: 'copy-row' },
        h('input', { id: 'consent-url', readonly: true, value: link, spellcheck: 'false' }),
        h('button', { type: 'button', id: 'copy-consent', class: 'secondary', onclick: () => copy(link) }, 'Copy link'))),
    h('p', {}, h('a', { href: link, target: '_blank', rel: 'noopener noreferrer', id: 'consent-link' }, 'Open the consent page'), ' (opens in a new tab; sign in as an administrator of the Azure tenant that owns your key vault and accept). The link is for this org only and expires after a day; this page fetches a fresh one each time it loads.'));
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const input = $('consent-url');
    input.select();
    document.execCommand('copy');
  }
  announce('Consent link copied to the clipboard.');
  const btn = $('copy-consent');
  btn.textContent = 'Copied';
  setTimeout(() => { btn.textContent = 'Copy link'; }, 2000);
}

// ---------- preflight ----------

// checkRank orders results for reading: what needs fixing first, then what
// passed, then what did not run.
const checkRank = { FAILED: 0, ERROR: 0, PASSED: 1, SKIPPED: 2 };

function renderChecks(results, id) {
  const ordered = [...results].sort((a, b) => (checkRank[a.status] ?? 1) - (checkRank[b.status] ?? 1));
  return h('ul', { class: 'checks', id }, ordered.map((r) => {
    const m = checkMarks[r.status] || { mark: '?', cls: 'skip', word: r.status };
    return h('li', { class: r.status.toLowerCase(), 'data-check': r.check, 'data-status': r.status },
      h('div', { class: 'check-head' },
        h('span', { class: `mark ${m.cls}`, 'aria-hidden': 'true', text: m.mark }),
        h('span', {}, h('span', { class: 'visually-hidden', text: `${m.word}: ` }), h('strong', { text: r.title || r.check }))),
      r.message ? h('p', { class: 'check-msg', text: r.message }) : null,
      r.remedy && r.remedy.length ? [h('p', {}, h('strong', { text: 'How to fix it:' })), steps(r.remedy)] : null);
  }));
}

async function runPreflight() {
  const input = $('key-id');
  const check = validateKeyField();
  if (!check.ok) {
    input.focus();
    return;
  }
  const btn = $('preflight-run');
  const gen = state.generation;
  const keyId = input.value.trim();
  setPassedKey('');
  btn.disabled = true;
  btn.textContent = 'Checking…';
  replace($('preflight-body'), h('p', { class: 'muted', text: 'Running every check against your key…' }));
  const r = await call(gen, () => state.client.post(paths.preflight, aws.preflightBody(keyId)), (err) => {
    replace($('preflight-body'), h('div', { class: 'notice bad', role: 'alert' }, errorBody(err)));
  });
  btn.disabled = false;
  btn.textContent = 'Check my key';
  if (!r.ok) return;
  if (input.value.trim() !== keyId) return; // the field changed meanwhile: these results are for another key
  const rep = r.v;
  const results = rep.results || [];
  const bad = results.filter((x) => x.status === 'FAILED' || x.status === 'ERROR').length;
  let summary;
  if (rep.passed) {
    summary = h('div', { class: 'notice ok', id: 'preflight-summary' }, h('p', {}, h('strong', { text: `✓ All ${results.length} checks passed.` }), ' This key is ready to use.'));
  } else {
    summary = h('div', { class: 'notice bad', id: 'preflight-summary' },
      h('p', {}, h('strong', { text: `✗ ${bad} of ${results.length} checks failed.` }), ' Fix what is listed below, then check again.'),
      rep.retryable ? h('p', { text: 'Some checks could not run because of a temporary problem; try again in a moment.' }) : null);
  }
  const label = h('p', { id: 'preflight-for', class: 'small' }, 'Results for ', h('code', { class: 'break', text: rep.keyIdentifier || keyId }), ', checked ', time(rep.checkedAt));
  replace($('preflight-body'), h('h4', { class: 'visually-hidden', text: 'Key check results' }), label, summary, renderChecks(results, 'preflight-results'));
  setPassedKey(rep.passed ? keyId : '');
  announce(rep.passed ? `Key check passed: all ${results.length} checks.` : `Key check failed: ${bad} of ${results.length} checks failed.`);
}

// setPassedKey records the key whose check passed ('' for none) and
// offers Enable for it alone.
function setPassedKey(keyId) {
  state.passedKey = keyId;
  renderSetup();
}

// onKeyIdChanged clears the results of the previous key and withdraws
// Enable until the new one passes a check.
function onKeyIdChanged() {
  if ($('key-id').hasAttribute('aria-invalid')) validateKeyField();
  if (state.passedKey !== '' || $('preflight-body').childElementCount > 0) {
    replace($('preflight-body'));
    setPassedKey('');
  }
}

// ---------- configuration form ----------

function setFieldError(field, message) {
  const input = $(field);
  const box = $(`${field}-error`);
  if (message) {
    box.textContent = message;
    box.hidden = false;
    input.setAttribute('aria-invalid', 'true');
  } else {
    box.textContent = '';
    box.hidden = true;
    input.removeAttribute('aria-invalid');
  }
}

function validateKeyField() {
  const r = aws.checkKey($('key-id').value, checkKeyIdentifier);
  setFieldError('key-id', r.ok ? '' : r.error);
  return r;
}

function nameProblem(name) {
  if (name === '') return 'Enter a name for this configuration.';
  if (name.trim() !== name) return 'Remove the spaces at the start or end of the name.';
  if (name.length > 128) return `The name is ${name.length} characters long; at most 128 are allowed.`;
  if (/[/?#%\\]/.test(name)) return 'The name must not contain / ? # % or \\.';
  return '';
}

function validateNameField() {
  const p = nameProblem($('config-name').value);
  setFieldError('config-name', p);
  return p === '';
}

// confirmTyped reports whether the confirmation field holds the org id or
// the word ENABLE.
function confirmTyped() {
  const v = $('confirm-typed').value.trim();
  return v === 'ENABLE' || (v !== '' && v === state.client.creds.org);
}

function onConfirmTyped() {
  $('confirm-ok').disabled = !confirmTyped();
}

function confirmEnable(keyId) {
  const dlg = $('confirm');
  $('confirm-org').textContent = state.client.creds.org;
  $('confirm-org-typed').textContent = state.client.creds.org;
  $('confirm-key').textContent = keyId;
  $('confirm-typed').value = '';
  $('confirm-ok').disabled = true;
  return new Promise((resolve) => {
    if (typeof dlg.showModal !== 'function') {
      resolve(window.prompt('Enable customer-managed keys permanently? This cannot be undone. Type ENABLE to confirm.') === 'ENABLE');
      return;
    }
    dlg.returnValue = '';
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok' && confirmTyped()), { once: true });
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

async function onConfigSubmit(ev) {
  ev.preventDefault();
  const errBox = $('config-error');
  errBox.hidden = true;
  const keyOk = validateKeyField().ok;
  const nameOk = validateNameField();
  if (!keyOk || !nameOk) {
    (keyOk ? $('config-name') : $('key-id')).focus();
    return;
  }
  const keyId = $('key-id').value.trim();
  const name = $('config-name').value;
  if (keyId !== state.passedKey) {
    setFieldError('key-id', 'Check this key first: Enable is offered once every check of this key has passed.');
    $('preflight-run').focus();
    return;
  }
  if (!(await confirmEnable(keyId))) {
    announce('Enablement cancelled; nothing was changed.');
    $('config-submit').focus();
    return;
  }
  const gen = state.generation;
  const btn = $('config-submit');
  btn.disabled = true;
  const body = {
    name,
    type: 'BYOK_CONFIG',
    imsOrgId: state.client.creds.org,
    configData: aws.configData(keyId),
  };
  const r = await call(gen, () => state.client.post(paths.configs, body), (err) => {
    const text = [err.detail, err.hint].filter(Boolean).join(' ');
    if (err.code === 'INVALID_KEY_IDENTIFIER') {
      setFieldError('key-id', text || err.title);
      $('key-id').focus();
    } else if (err.code === 'CONFIG_NAME_TAKEN' || (err.code === 'INVALID_FIELD' && /name/i.test(err.title))) {
      setFieldError('config-name', text || err.title);
      $('config-name').focus();
    } else {
      replace(errBox, errorBody(err));
      errBox.hidden = false;
    }
  });
  btn.disabled = false;
  if (!r.ok) return;
  announce(`Enablement of configuration ${name} started.`);
  await loadConfigs(gen);
  renderSetup();
  schedule();
  $('job').scrollIntoView({ block: 'start' });
}

// ---------- configurations and the job ----------

async function loadConfigs(gen) {
  const r = await call(gen, () => state.client.get(paths.configs), (err) => {
    $('job').hidden = false;
    replace($('job-body'), h('div', { class: 'notice bad', role: 'alert' }, errorBody(err)));
  });
  if (!r.ok) return;
  state.configs = (r.v && r.v.configs) || [];
  renderJob();
}

// currentConfig is the one the page follows: a running job, else the
// completed one, else the newest.
function currentConfig() {
  const cs = [...state.configs].sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt)));
  return cs.find((c) => ACTIVE_STATUSES.has(c.status)) || cs.find((c) => c.status === 'COMPLETED') || cs[0] || null;
}

function applying() {
  const c = currentConfig();
  return !!c && ACTIVE_STATUSES.has(c.status);
}

function renderJob() {
  const c = currentConfig();
  $('job').hidden = !c;
  if (!c) return;
  const st = jobStatuses[c.status] || { label: c.status, tone: 'neutral', text: '' };
  const jobKey = `${c.name}:${c.status}`;
  if (state.seen.jobKey && state.seen.jobKey !== jobKey) {
    announce(`Enablement ${st.label.toLowerCase()}.`);
    if (!ACTIVE_STATUSES.has(c.status)) state.jobFinished = true;
  }
  state.seen.jobKey = jobKey;

  const order = ['RUNNING', 'UPDATE_EXISTING_RESOURCES', 'COMPLETED'];
  const stageNames = ['Check access to the key', 'Apply the key to every sandbox', 'Done'];
  const at = c.status === 'NEW' ? 0 : order.indexOf(c.status);
  const failedAt = c.status === 'FAILED' ? failedStage(c) : -1;
  const stages = h('ol', { class: 'stages', 'aria-label': 'Enablement stages' }, stageNames.map((n, i) => {
    let cls = '';
    let word = 'not started';
    if (failedAt >= 0) {
      if (i < failedAt) { cls = 'done'; word = 'done'; } else if (i === failedAt) { cls = 'failed'; word = 'failed'; }
    } else if (i < at || c.status === 'COMPLETED') { cls = 'done'; word = 'done'; } else if (i === at) { cls = 'current'; word = 'in progress'; }
    return h('li', { class: cls, 'aria-current': cls === 'current' ? 'step' : false },
      h('span', { 'aria-hidden': 'true', text: cls === 'done' ? '✓ ' : cls === 'failed' ? '✗ ' : '' }), n,
      h('span', { class: 'visually-hidden', text: ` (${word})` }));
  }));

  const cd = c.configData || {};
  const parts = [
    h('p', {}, 'Configuration ', h('code', { text: c.name }), ' ', badge(st.tone, st.label, { id: 'job-status', 'data-status': c.status })),
    h('p', { text: st.text }),
    stages,
  ];
  const pr = c.progress || { dataKeysRewrapped: 0, dataKeysTotal: 0 };
  if (c.status === 'UPDATE_EXISTING_RESOURCES' || (c.status === 'COMPLETED' && pr.dataKeysTotal > 0)) {
    parts.push(h('div', { id: 'job-progress-box' }, progress('job-progress', pr.dataKeysRewrapped, pr.dataKeysTotal)));
  }
  if (c.status === 'FAILED' && c.failure) {
    const f = c.failure;
    parts.push(h('div', { class: 'notice bad', id: 'job-failure' },
      h('p', {}, h('strong', { text: 'Failed check: ' }), f.title || f.check),
      f.message ? h('p', { text: f.message }) : null,
      f.code ? h('p', {}, 'Code: ', h('code', { text: f.code })) : null,
      f.remedy && f.remedy.length ? [h('p', {}, h('strong', { text: 'How to fix it:' })), steps(f.remedy, { id: 'job-remedy' })] : null));
  }
  if (ACTIVE_STATUSES.has(c.status) && c.lastError) {
    const p = c.lastError;
    parts.push(h('div', { class: 'notice warn', id: 'job-retry' },
      h('p', {}, h('strong', { text: 'Waiting to try again. ' }), p.message || ''),
      p.retryAt ? h('p', {}, 'Next attempt: ', time(p.retryAt)) : null,
      steps(p.remedy)));
  }
  parts.push(facts([
    cd.keyArn ? ['Key ARN (AWS KMS)', h('code', { text: cd.keyArn, class: 'break' })] : ['Key vault', h('code', { text: cd.keyVaultUri || '—' })],
    cd.keyArn ? null : ['Key name', h('code', { text: cd.keyName || '—' })],
    ['Submitted', time(c.createdAt)],
    ['Last update', time(c.updatedAt)],
  ]));
  if (c.checks && c.checks.length) {
    parts.push(h('details', {}, h('summary', { text: `Validation results (${c.checks.length} checks)` }), renderChecks(c.checks, 'job-checks')));
  }
  replace($('job-body'), parts);
}

function failedStage(c) {
  // A failure found while applying the key still shows the first stage as
  // done; anything else failed at the access check.
  const p = c.progress || {};
  return p.dataKeysRewrapped > 0 ? 1 : 0;
}

// ---------- setup visibility ----------

function renderSetup() {
  const c = currentConfig();
  const enabled = (state.health && state.health.state && state.health.state !== 'SYSTEM_MANAGED') || (c && c.status === 'COMPLETED');
  const active = applying();
  $('setup-done').hidden = !enabled;
  $('setup-steps').hidden = !!enabled;
  $('setup-title').textContent = enabled ? 'Your own key' : 'Use your own key';
  if (state.health && state.health.aws) $('setup-done-rotate').textContent = aws.ROTATE_TEXT;
  $('setup-done-text').textContent = active
    ? 'Customer-managed keys are being turned on for this org. This cannot be stopped or undone.'
    : 'Your data is encrypted with your own key. This cannot be turned off.';
  const btn = $('config-submit');
  const checked = state.passedKey !== '' && state.passedKey === $('key-id').value.trim();
  btn.disabled = !!active || !checked;
  btn.title = active ? 'An enablement is already running.' : checked ? '' : 'Check the key first: Enable is offered once every check of this key has passed.';
  $('config-submit-help').textContent = active || checked ? '' : 'Enable is offered once every check of the key in the field has passed.';
}

// ---------- alerts ----------

async function loadAlerts(gen) {
  const err = (e) => {
    replace($('alerts-error'), errorBody(e));
    $('alerts-error').hidden = false;
  };
  const [o, r] = await Promise.all([
    call(gen, () => state.client.get(paths.alerts('OPEN')), err),
    call(gen, () => state.client.get(paths.alerts('RESOLVED')), err),
  ]);
  if (!o.ok || !r.ok) return;
  $('alerts-error').hidden = true;
  state.alertsOpen = sortAlerts(o.v.alerts || []);
  state.alertsResolved = sortAlerts(r.v.alerts || []);
  renderAlerts();
}

function sortAlerts(list) {
  return list.sort((a, b) => String(b.lastSeen).localeCompare(String(a.lastSeen)));
}

const RESOLVED_SHOWN = 20;

function renderAlerts() {
  const openIds = new Set(state.alertsOpen.map((a) => a.id));
  if (state.seen.openIds) {
    for (const a of state.alertsOpen) if (!state.seen.openIds.has(a.id)) announce(`New alert: ${a.title}.`);
    for (const id of state.seen.openIds) if (!openIds.has(id)) announce('An alert was resolved.');
  }
  state.seen.openIds = openIds;

  replace($('alerts-open'), state.alertsOpen.length
    ? state.alertsOpen.map(alertItem)
    : h('p', { class: 'muted', id: 'no-open-alerts', text: 'No open alerts. Your key has nothing that needs attention.' }));
  const shown = state.alertsResolved.slice(0, RESOLVED_SHOWN);
  // Resolved alerts are history: collapsed, and kept open across refreshes
  // once the reader opens them.
  const n = state.alertsResolved.length;
  const details = h('details', { id: 'resolved-details', open: state.resolvedOpen },
    h('summary', { id: 'resolved-summary', text: `${n} resolved alert${n === 1 ? '' : 's'}` }),
    shown.map(alertItem),
    n > RESOLVED_SHOWN ? h('p', { class: 'muted', text: `Showing the ${RESOLVED_SHOWN} most recent of ${n} resolved alerts.` }) : null);
  details.addEventListener('toggle', () => { state.resolvedOpen = details.open; });
  replace($('alerts-resolved'), n ? details : h('p', { class: 'muted', id: 'no-resolved-alerts', text: 'No resolved alerts.' }));
}

function alertItem(a) {
  const open = a.status === 'OPEN';
  const kindClass = { KEY_ACCESS_DISABLED: 'disabled', KEY_ACCESS_FAILURE: 'failure', ALERT_NOTIFICATION: 'notification' }[a.kind] || '';
  const headId = `alert-${a.id}-title`;
  return h('article', { class: `alert-item ${open ? 'open' : 'resolved'} ${kindClass}`, 'aria-labelledby': headId, 'data-kind': a.kind, 'data-alert-id': a.id },
    h('h4', { id: headId },
      h('span', { text: a.title || a.kind }),
      badge(open ? (a.kind === 'ALERT_NOTIFICATION' ? 'warn' : 'bad') : 'ok', open ? 'Open' : 'Resolved'),
      a.acknowledgedAt ? badge('neutral', 'Acknowledged') : null),
    a.summary ? h('p', { text: a.summary }) : null,
    a.message ? h('p', {}, h('strong', { text: 'Last finding: ' }), a.message) : null,
    open && a.dataBlocked ? h('p', { class: 'notice bad' }, h('strong', { text: 'Your data is unavailable while this alert is open.' })) : null,
    a.probableCauses && a.probableCauses.length ? [h('p', {}, h('strong', { text: 'Possible causes:' })), h('ul', {}, a.probableCauses.map((c) => h('li', { text: c })))] : null,
    a.steps && a.steps.length ? [h('p', {}, h('strong', { text: 'How to fix it:' })), steps(a.steps)] : null,
    facts([
      ['Cause', h('code', { text: a.cause || '—' })],
      ['First seen', time(a.firstSeen)],
      ['Last seen', time(a.lastSeen)],
      ['Occurrences', String(a.occurrences ?? 0)],
      a.resolvedAt ? ['Resolved', time(a.resolvedAt)] : null,
      a.acknowledgedAt ? ['Acknowledged', [time(a.acknowledgedAt), a.acknowledgedBy ? ` by ${a.acknowledgedBy}` : '']] : null,
    ]),
    open && !a.acknowledgedAt
      ? h('div', { class: 'actions' }, h('button', { type: 'button', class: 'secondary small', id: `ack-${a.id}`, 'aria-describedby': headId, onclick: () => acknowledge(a) }, 'Acknowledge'))
      : null);
}

async function acknowledge(a) {
  const gen = state.generation;
  const btn = $(`ack-${a.id}`);
  if (btn) btn.disabled = true;
  const r = await call(gen, () => state.client.post(paths.acknowledge(a.id)), (err) => {
    replace($('alerts-error'), errorBody(err));
    $('alerts-error').hidden = false;
    if (btn) btn.disabled = false;
  });
  if (!r.ok) return;
  announce(`Alert "${a.title}" acknowledged.`);
  await loadAlerts(gen);
  $('alerts-title').focus();
}

// ---------- notifications (webhooks) ----------

function webhookError(err) {
  replace($('webhooks-error'), errorBody(err));
  $('webhooks-error').hidden = false;
}

async function loadWebhooks(gen) {
  const r = await call(gen, () => state.client.get(paths.webhooks), webhookError);
  if (!r.ok) return;
  $('webhooks-error').hidden = true;
  renderWebhooks(r.v.webhooks || []);
}

function renderWebhooks(list) {
  state.webhooks = list;
  replace($('webhooks-list'), list.length
    ? h('ul', { class: 'webhooks', id: 'webhooks' }, list.map(webhookItem))
    : h('p', { class: 'muted', id: 'no-webhooks', text: 'No webhooks yet: alerts are shown here and in the CLI only.' }));
}

function webhookItem(w) {
  const label = `webhook-${w.id}-url`;
  return h('li', { class: 'webhook', 'data-webhook-id': w.id },
    h('p', {}, h('code', { class: 'break', id: label, text: w.url })),
    h('p', { class: 'muted' }, 'Added ', time(w.createdAt)),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary small', id: `test-${w.id}`, 'aria-describedby': label, onclick: () => testWebhook(w) }, 'Send test event'),
      h('button', { type: 'button', class: 'danger small', id: `delete-${w.id}`, 'aria-describedby': label, onclick: () => deleteWebhook(w) }, 'Delete')),
    h('p', { class: 'webhook-result', id: `result-${w.id}`, role: 'status', hidden: true }));
}

async function addWebhook(ev) {
  ev.preventDefault();
  const input = $('webhook-url');
  const url = input.value.trim();
  let problem = '';
  if (!url) problem = 'Enter the address of your webhook receiver.';
  else if (!/^https?:\/\//i.test(url)) problem = 'The address must start with https://.';
  const fieldErr = $('webhook-url-error');
  if (problem) {
    input.setAttribute('aria-invalid', 'true');
    fieldErr.textContent = problem;
    fieldErr.hidden = false;
    input.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  fieldErr.hidden = true;
  const gen = state.generation;
  $('webhook-add').disabled = true;
  const r = await call(gen, () => state.client.post(paths.webhooks, { url }), (err) => {
    input.setAttribute('aria-invalid', 'true');
    replace(fieldErr, errorBody(err));
    fieldErr.hidden = false;
    input.focus();
  });
  $('webhook-add').disabled = false;
  if (!r.ok) return;
  input.value = '';
  const secret = r.v.secret || '';
  const box = $('webhook-secret');
  replace(box,
    h('p', {}, h('strong', { text: 'Webhook added. Copy its signing secret now: ' }), 'it is shown this once and cannot be read again. Your receiver checks each request\'s X-Cmk-Signature header with it.'),
    h('div', { class: 'field' },
      h('label', { for: 'webhook-secret-value', text: 'Signing secret' }),
      h('div', { class: 'copy-row' },
        h('input', { id: 'webhook-secret-value', readonly: true, value: secret, spellcheck: 'false' }),
        h('button', { type: 'button', id: 'copy-secret', class: 'secondary', onclick: () => copySecret(secret) }, 'Copy secret'))),
    h('div', { class: 'actions' }, h('button', { type: 'button', id: 'secret-done', class: 'secondary small', onclick: hideSecret }, 'I have saved it')));
  box.hidden = false;
  announce('Webhook added. Its signing secret is shown once; copy it now.');
  await loadWebhooks(gen);
  $('webhook-secret-value').focus();
}

function hideSecret() {
  replace($('webhook-secret'));
  $('webhook-secret').hidden = true;
  $('notifications-title').focus();
}

async function copySecret(secret) {
  try {
    await navigator.clipboard.writeText(secret);
  } catch {
    $('webhook-secret-value').select();
    document.execCommand('copy');
  }
  announce('Signing secret copied to the clipboard.');
  $('copy-secret').textContent = 'Copied';
}

async function testWebhook(w) {
  const gen = state.generation;
  const btn = $(`test-${w.id}`);
  const out = $(`result-${w.id}`);
  btn.disabled = true;
  out.hidden = false;
  out.className = 'webhook-result muted';
  out.textContent = 'Sending a test event…';
  const r = await call(gen, () => state.client.post(paths.webhookTest(w.id)), (err) => {
    out.className = 'webhook-result notice bad';
    replace(out, errorBody(err));
  });
  btn.disabled = false;
  if (!r.ok) return;
  const t = r.v;
  if (t.delivered) {
    out.className = 'webhook-result notice ok';
    out.textContent = `Delivered: your receiver answered HTTP ${t.status} in ${t.tookMs} ms (event ${t.eventId}).`;
  } else {
    out.className = 'webhook-result notice bad';
    out.textContent = `Not delivered: ${t.error || 'no answer'}. Check that the receiver is reachable from the internet, answers 2xx, and checks signatures with the secret shown when you added it.`;
  }
  announce(out.textContent);
}

async function deleteWebhook(w) {
  if (!window.confirm(`Delete the webhook ${w.url}? Alerts stop being posted to it.`)) return;
  const gen = state.generation;
  const r = await call(gen, () => state.client.delete(paths.webhook(w.id)), webhookError);
  if (!r.ok) return;
  announce('Webhook deleted.');
  await loadWebhooks(gen);
  $('notifications-title').focus();
}

// ---------- start ----------

async function init() {
  $('signin-form').addEventListener('submit', onSignInSubmit);
  $('sign-out').addEventListener('click', signOut);
  $('dev-login').addEventListener('click', devLogin);
  $('recheck').addEventListener('click', recheck);
  $('preflight-run').addEventListener('click', runPreflight);
  aws.initProvider(() => state.client);
  $('config-form').addEventListener('submit', onConfigSubmit);
  $('webhook-form').addEventListener('submit', addWebhook);
  setupHistory({ client: () => state.client, handleError });
  $('key-id').addEventListener('blur', () => { if ($('key-id').value.trim() !== '') validateKeyField(); });
  $('key-id').addEventListener('input', onKeyIdChanged);
  $('confirm-typed').addEventListener('input', onConfirmTyped);
  // Enter in the confirmation field confirms once it holds the right
  // words (the form's default button would be Cancel).
  $('confirm-typed').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter') return;
    ev.preventDefault();
    if (confirmTyped()) $('confirm').close('ok');
  });
  $('config-name').addEventListener('blur', () => { if ($('config-name').value !== '') validateNameField(); });
  $('config-name').addEventListener('input', () => { if ($('config-name').hasAttribute('aria-invalid')) validateNameField(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && state.client) refresh(); });

  try {
    const res = await fetch('/ui/api/config', { cache: 'no-store', credentials: 'omit' });
    const cfg = res.ok ? await res.json() : {};
    $('dev-login').hidden = !cfg.devLogin;
  } catch {
    $('dev-login').hidden = true;
  }

  const saved = loadSession();
  if (saved) {
    $('in-org').value = saved.org;
    $('in-apikey').value = saved.apiKey;
    await signIn(saved);
  } else {
    showSignIn(null);
  }
  document.body.dataset.ready = 'true';
}

init();
