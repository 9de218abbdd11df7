// The History and Audit trail sections: the org's key-health episodes with
// the stores that refused data, the access report to take away, and the
// audit trail with its filters and CSV download. Text from the service is
// always set as text.

import { paths } from './api.js';
import { errorBody, facts, h, replace, time } from './dom.js';

const $ = (id) => document.getElementById(id);

const storeNames = { lake: 'Data lake', profile: 'Profile store', 'profile-cache': 'Profile store (read cache)' };
const stateTones = { DEGRADED: 'warn', COASTING: 'warn', REVOKED: 'bad' };

// ctx: { client(): the signed-in Client or null, handleError(err): true when
// the page changed view }.
let ctx = null;

export function setupHistory(c) {
  ctx = c;
  $('report-html').addEventListener('click', () => download(paths.report('html'), 'cmk-access-report.html', $('history-error')));
  $('report-json').addEventListener('click', () => download(paths.report('json'), 'cmk-access-report.json', $('history-error')));
  $('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(); });
  $('audit-csv').addEventListener('click', () => {
    const q = auditQuery();
    if (q) download(paths.audit({ ...q, format: 'csv' }), 'cmk-audit.csv', $('audit-error'));
  });
}

function showError(box, err) {
  if (ctx.handleError(err)) return;
  replace(box, errorBody(err));
  box.hidden = false;
}

// seconds in words, for people.
export function duration(sec) {
  const s = Math.max(0, Math.round(Number(sec) || 0));
  const plural = (n, w) => `${n} ${w}${n === 1 ? '' : 's'}`;
  if (s < 1) return 'under a second';
  if (s < 60) return plural(s, 'second');
  if (s < 3600) {
    const m = Math.floor(s / 60);
    return s % 60 ? `${plural(m, 'minute')} ${plural(s % 60, 'second')}` : plural(m, 'minute');
  }
  if (s < 86400) {
    const hr = Math.floor(s / 3600);
    const m = Math.round((s % 3600) / 60);
    return m ? `${plural(hr, 'hour')} ${plural(m, 'minute')}` : plural(hr, 'hour');
  }
  const d = Math.floor(s / 86400);
  const hr = Math.round((s % 86400) / 3600);
  return hr ? `${plural(d, 'day')} ${plural(hr, 'hour')}` : plural(d, 'day');
}

async function download(path, filename, errorBox) {
  const client = ctx.client();
  if (!client) return;
  try {
    const blob = await client.file(path);
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    errorBox.hidden = true;
  } catch (err) {
    showError(errorBox, err);
  }
}

// ---------- history ----------

export async function loadHistory() {
  const client = ctx.client();
  if (!client) return;
  try {
    const v = await client.get(paths.history);
    if (client !== ctx.client()) return;
    $('history-error').hidden = true;
    renderHistory(v.episodes || []);
  } catch (err) {
    if (client === ctx.client()) showError($('history-error'), err);
  }
}

function renderHistory(episodes) {
  if (episodes.length === 0) {
    replace($('history-list'), h('p', { class: 'muted', id: 'no-episodes', text: 'Your key was healthy throughout the last 90 days: your data was never refused.' }));
    return;
  }
  replace($('history-list'), h('ol', { class: 'timeline', 'aria-label': 'Episodes, newest first' }, episodes.map(episodeItem)));
}

function episodeItem(e) {
  const title = [time(e.start), ' – ', e.ongoing ? h('strong', { text: 'ongoing' }) : time(e.end)];
  const blocked = e.blockedFrom
    ? ['Refused from ', time(e.blockedFrom), ' until ', e.blockedUntil ? time(e.blockedUntil) : 'now', ` (${duration(e.blockedSeconds)})`]
    : 'Never: your data was served throughout.';
  return h('li', { class: 'episode' },
    h('h3', {}, title),
    h('p', {}, h('span', { class: `badge ${stateTones[e.worstState] || 'neutral'}`, text: `Worst: ${e.worstState}` }), ` lasted ${duration(e.durationSeconds)}`),
    facts([
      ['Key', h('code', { class: 'break', text: e.key || '—' })],
      ['Causes', h('ul', { class: 'causes' }, (e.causes || []).map((c) => h('li', {}, time(c.at), ` ${c.state}: `, h('code', { text: c.cause }), c.message ? ` — ${c.message}` : '')))],
      ['Data refused', h('span', {}, blocked)],
    ]),
    (e.stores || []).length
      ? h('table', { class: 'stores' },
        h('caption', { class: 'visually-hidden', text: 'Stores that refused data in this episode' }),
        h('thead', {}, h('tr', {}, ['Store', 'First refused', 'Last refused', 'Refused requests', 'Served again'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, e.stores.map((s) => h('tr', {},
          h('th', { scope: 'row', text: storeNames[s.store] || s.store }),
          h('td', {}, time(s.firstRefused)),
          h('td', {}, time(s.lastRefused)),
          h('td', { text: String(s.refused) }),
          h('td', {}, s.resumed ? time(s.resumed) : 'not yet')))))
      : h('p', { class: 'muted', text: 'No request for your data was refused in this episode.' }));
}

// ---------- audit trail ----------

const AUDIT_SHOWN = 100;

// auditQuery reads the filters, or shows what is wrong and returns null.
function auditQuery() {
  const q = { limit: String(AUDIT_SHOWN) };
  for (const [id, name] of [['audit-since', 'since'], ['audit-until', 'until']]) {
    const v = $(id).value;
    if (!v) continue;
    const d = new Date(v);
    if (Number.isNaN(d.getTime())) {
      showError($('audit-error'), { title: `The ${name === 'since' ? 'From' : 'Until'} time is not a date and time`, hint: 'Pick one with the date picker, or clear the field.' });
      return null;
    }
    q[name] = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }
  const op = $('audit-op').value.trim();
  const actor = $('audit-actor').value.trim();
  if (op) q.operation = op;
  if (actor) q.actor = actor;
  return q;
}

export async function loadAudit() {
  const client = ctx.client();
  if (!client) return;
  const q = auditQuery();
  if (!q) return;
  try {
    const v = await client.get(paths.audit(q));
    if (client !== ctx.client()) return;
    $('audit-error').hidden = true;
    renderAudit(v.entries || []);
  } catch (err) {
    if (client === ctx.client()) showError($('audit-error'), err);
  }
}

function renderAudit(entries) {
  if (entries.length === 0) {
    replace($('audit-list'), h('p', { class: 'muted', text: 'No audit entries match these filters.' }));
    return;
  }
  replace($('audit-list'),
    h('table', { class: 'audit-table' },
      h('caption', { class: 'visually-hidden', text: 'Audit entries, newest first' }),
      h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Operation', 'Outcome', 'Detail'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, entries.map((e) => h('tr', {},
        h('td', {}, time(e.at)),
        h('td', {}, h('code', { text: e.actor })),
        h('td', { text: e.operation }),
        h('td', { text: e.outcome }),
        h('td', { class: 'break', text: e.detail || (e.key ? `${e.key}${e.keyVersion ? ` (version ${e.keyVersion})` : ''}` : '') }))))),
    entries.length >= AUDIT_SHOWN ? h('p', { class: 'muted', text: `Showing the newest ${AUDIT_SHOWN}; narrow the period, or download the CSV for all of them.` }) : null);
}
