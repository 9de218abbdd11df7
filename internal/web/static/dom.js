// Small DOM helpers. Text from the service is always set as text, never
// parsed as HTML.

// h(tag, attrs, ...children) builds an element. attrs: class, id, text,
// on<event> handlers, boolean attributes (true/false) and plain attributes.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// replace swaps container's content, keeping keyboard focus on the element
// with the same id if the focused element was inside it.
export function replace(container, ...children) {
  const active = document.activeElement;
  const focusId = active && container.contains(active) ? active.id : '';
  container.replaceChildren();
  append(container, children);
  if (focusId) {
    const again = document.getElementById(focusId);
    if (again) again.focus({ preventScroll: true });
  }
}

// announce reads a short status message to screen readers.
let announceTimer;
export function announce(message) {
  const region = document.getElementById('announcer');
  clearTimeout(announceTimer);
  region.textContent = '';
  // A fresh text node after a tick makes repeated messages heard again.
  announceTimer = setTimeout(() => { region.textContent = message; }, 50);
}

// time renders an ISO timestamp as a <time> in the reader's locale.
export function time(iso) {
  if (!iso) return h('span', { class: 'muted', text: '—' });
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', { text: iso });
  // The zone is part of the text: a time read out to someone elsewhere
  // must not change meaning.
  return h('time', { datetime: iso, title: d.toISOString(), text: d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'long' }) });
}

// facts renders [label, value] pairs as a description list.
export function facts(pairs, attrs) {
  return h('dl', { class: 'facts', ...(attrs || {}) }, pairs.filter(Boolean).map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

// steps renders numbered remedy steps.
export function steps(list, attrs) {
  if (!list || list.length === 0) return null;
  return h('ol', { class: 'remedy', ...(attrs || {}) }, list.map((s) => h('li', { text: s })));
}

// errorBody renders an APIError (or any Error) as the content of a notice.
export function errorBody(err) {
  return [
    h('p', {}, h('strong', { text: err.title || err.message || 'Something went wrong' })),
    err.detail ? h('p', { text: err.detail }) : null,
    err.hint ? h('p', { text: err.hint }) : null,
    err.requestId ? h('p', { class: 'small' }, 'Request id: ', h('code', { text: err.requestId })) : null,
  ];
}
