// The AWS KMS variant of the Encryption page: the provider choice, the
// org's own key-policy statements with a copy button, a first check of a
// key ARN as it is typed, and what the health says of an AWS key. The
// service has the last word on every ARN (partition, Region, form).

import { announce, errorBody, facts, h, replace, time } from './dom.js';

const $ = (id) => document.getElementById(id);

export const AZURE = 'AZURE_KEYVAULT';
export const AWS = 'AWS_KMS';

const arnExample = 'arn:aws:kms:<region>:<account>:key/<key id>';
const policyPath = '/data/infrastructure/manager/byok/aws-key-policy';

const ui = { provider: AZURE, regions: null, policyFor: '' };

export const ROTATE_TEXT = 'To rotate the key, rotate it in AWS KMS (automatic rotation, or on demand): the ARN stays, earlier key material keeps decrypting, and nothing needs re-wrapping. To withdraw the platform\'s access, disable the key or remove this org\'s statements from its key policy.';

export function isAWS() { return ui.provider === AWS; }

// checkKeyArn returns {ok: true, region, account, id} or {ok: false, error}.
export function checkKeyArn(raw, regions) {
  const v = (raw || '').trim();
  if (v === '') return { ok: false, error: `Enter the key ARN, for example ${arnExample}.` };
  if (/\s/.test(v)) return { ok: false, error: 'The key ARN must not contain spaces.' };
  const f = v.split(':');
  if (f.length < 6 || f[0] !== 'arn') return { ok: false, error: `This is not an ARN. It should look like ${arnExample}.` };
  const [, partition, service, region, account] = f;
  const resource = f.slice(5).join(':');
  if (!['aws', 'aws-us-gov', 'aws-cn'].includes(partition)) return { ok: false, error: `Partition "${partition}" is not allowed: use aws, aws-us-gov or aws-cn.` };
  if (service !== 'kms') return { ok: false, error: `This is an ARN of ${service || 'no service'}, not of a KMS key (arn:${partition}:kms:…).` };
  if (!/^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$/.test(region)) return { ok: false, error: `"${region}" is not an AWS Region such as eu-west-1.` };
  if (regions && regions.length && !regions.includes(region)) return { ok: false, error: `The key is in ${region}; the platform uses keys in ${regions.join(', ')} only. Keys are regional: create it there.` };
  if (!/^[0-9]{12}$/.test(account)) return { ok: false, error: `"${account}" is not an AWS account id (twelve digits).` };
  const m = resource.match(/^(key|alias)\/(.+)$/);
  if (!m) return { ok: false, error: 'The ARN must end in key/<key id> or alias/<alias name>.' };
  if (m[1] === 'key' && m[2].startsWith('mrk-')) return { ok: false, error: 'This is a multi-Region key; the platform needs a single-Region key.' };
  if (m[1] === 'key' && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(m[2])) return { ok: false, error: `"${m[2]}" is not a key id such as 1234abcd-12ab-34cd-56ef-1234567890ab.` };
  if (m[1] === 'alias' && m[2].startsWith('aws/')) return { ok: false, error: 'This alias names a key AWS manages for a service; use a customer managed key.' };
  return { ok: true, region, account, id: m[2] };
}

// checkKey checks the key field's value for the chosen provider.
export function checkKey(raw, checkAzure) {
  return isAWS() ? checkKeyArn(raw, ui.regions) : checkAzure(raw);
}

// preflightBody and configData name the key for the chosen provider.
export function preflightBody(key) {
  return isAWS() ? { keyArn: key } : { keyVaultKeyIdentifier: key };
}

export function configData(key) {
  return isAWS() ? { providerType: AWS, keyArn: key } : { providerType: AZURE, keyVaultKeyIdentifier: key };
}

// initProvider wires the provider choice; client() gives the signed-in
// client (or null).
export function initProvider(client) {
  for (const r of document.querySelectorAll('input[name="provider"]')) {
    r.addEventListener('change', () => { if (r.checked) choose(r.value, client()); });
  }
}

function choose(provider, client) {
  ui.provider = provider;
  const aws = provider === AWS;
  for (const el of document.querySelectorAll('.azure-only')) el.hidden = aws;
  for (const el of document.querySelectorAll('.aws-only')) el.hidden = !aws;
  const input = $('key-id');
  input.type = aws ? 'text' : 'url';
  input.name = aws ? 'keyArn' : 'keyVaultKeyIdentifier';
  input.placeholder = aws ? 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab' : 'https://my-vault.vault.azure.net/keys/my-key';
  $('key-id-label').textContent = aws ? 'Key ARN' : 'Key identifier';
  $('key-id-help').hidden = aws;
  $('key-arn-help').hidden = !aws;
  input.removeAttribute('aria-invalid');
  $('key-id-error').hidden = true;
  replace($('preflight-body'));
  if (aws && client) loadPolicy(client);
  announce(aws ? 'AWS KMS selected.' : 'Azure Key Vault selected.');
}

async function loadPolicy(client) {
  const org = client.creds.org;
  if (ui.policyFor === org) return;
  const body = $('aws-policy-body');
  replace(body, h('p', { class: 'muted', text: 'Loading…' }));
  let p;
  try {
    p = await client.get(policyPath);
  } catch (err) {
    replace(body, h('div', { class: 'notice bad', role: 'alert' }, errorBody(err)));
    return;
  }
  ui.policyFor = org;
  ui.regions = p.regions || [p.region];
  $('aws-region').textContent = (p.regions || [p.region]).join(' or ');
  replace(body,
    h('p', {}, 'These statements are made for org ', h('code', { text: p.imsOrgId }), '. They let the platform\'s AWS account ', h('code', { text: p.platformAccount }),
      ' describe the key, and use it only with this org\'s encryption context (', h('code', { text: 'kms:EncryptionContext:cmk:org' }),
      '), so the key can protect this org\'s data and no other org\'s. Add them to the key policy\'s Statement list.'),
    h('pre', { id: 'aws-policy', class: 'break', tabindex: '0', text: p.statementsJson }),
    h('div', { class: 'copy-row' },
      h('button', { type: 'button', id: 'copy-aws-policy', class: 'secondary', onclick: () => copyPolicy(p.statementsJson) }, 'Copy statements')));
}

async function copyPolicy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();
    range.selectNodeContents($('aws-policy'));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    document.execCommand('copy');
  }
  announce('Key-policy statements copied to the clipboard.');
  const btn = $('copy-aws-policy');
  btn.textContent = 'Copied';
  setTimeout(() => { btn.textContent = 'Copy statements'; }, 2000);
}

// signedOut forgets what belonged to the signed-in org.
export function signedOut() {
  ui.policyFor = '';
  ui.regions = null;
  const azure = document.querySelector(`input[name="provider"][value="${AZURE}"]`);
  if (azure && !azure.checked) {
    azure.checked = true;
    choose(AZURE, null);
  }
}

// healthFacts are the facts of an AWS key for the health card, or null
// for a Key Vault key.
export function healthFacts(hv) {
  const a = hv.aws;
  if (!a) return null;
  return [
    facts([
      ['Key ARN', h('code', { text: a.keyArn, id: 'health-key-arn', class: 'break' })],
      ['Key state (AWS KMS)', h('code', { text: a.keyState || '—', id: 'health-aws-state' })],
      ['Current key material', h('code', { text: a.keyMaterialId ? `${a.keyMaterialId.slice(0, 16)}…` : '—' })],
      ['Last rotation', a.lastRotation ? time(a.lastRotation) : 'not readable by the platform (AWS shows it to the key\'s account)'],
      ['In this state since', time(hv.since)],
      ['Last check', time(hv.lastCheck)],
      ['Last successful check', time(hv.lastOk)],
      ['Next check', time(hv.nextCheck)],
      hv.coastingUntil ? ['Data served until (unless AWS KMS answers)', time(hv.coastingUntil)] : null,
    ]),
    h('p', { class: 'small', id: 'health-aws-rotation', text: a.rotation }),
  ];
}
