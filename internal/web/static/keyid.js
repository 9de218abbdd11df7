// A first, friendly check of a Key Vault key identifier as the administrator
// types it. The service has the last word (it also checks the host against
// the vault suffixes it allows); this only catches the common slips early.

const example = 'https://<vault>.vault.azure.net/keys/<name>';

// checkKeyIdentifier returns {ok: true, vault, name, version} or
// {ok: false, error}.
export function checkKeyIdentifier(raw) {
  const v = (raw || '').trim();
  if (v === '') {
    return { ok: false, error: `Enter the key identifier, for example ${example}.` };
  }
  if (/\s/.test(v)) {
    return { ok: false, error: 'The key identifier must not contain spaces.' };
  }
  let u;
  try {
    u = new URL(v);
  } catch {
    return { ok: false, error: `This is not a URL. It should look like ${example}.` };
  }
  if (u.protocol !== 'https:') {
    return { ok: false, error: `The key identifier must start with https:// (this one uses ${u.protocol.replace(/:$/, '')}).` };
  }
  if (u.username || u.password) {
    return { ok: false, error: 'The key identifier must not contain a user name or password.' };
  }
  if (v.includes('?') || v.includes('#')) {
    return { ok: false, error: 'Remove the part after ? or #: a key identifier has no query or fragment.' };
  }
  if (u.port !== '') {
    return { ok: false, error: 'Remove the port number: Key Vault is reached on the standard HTTPS port.' };
  }
  const labels = u.hostname.split('.');
  if (labels.length < 3 || labels.some((l) => l === '')) {
    return { ok: false, error: `The host should name your vault, like <vault>.vault.azure.net (found ${u.hostname}).` };
  }
  const vault = labels[0];
  if (!/^[a-z][a-z0-9-]{1,22}[a-z0-9]$/.test(vault) || vault.includes('--')) {
    return { ok: false, error: `"${vault}" is not a valid vault name: 3 to 24 letters, digits and single hyphens, starting with a letter.` };
  }
  const m = u.pathname.match(/^\/keys\/([^/]+)(?:\/([^/]+))?\/?$/);
  if (!m) {
    return { ok: false, error: 'The path must be /keys/<name>, optionally followed by /<version>.' };
  }
  const [, name, version = ''] = m;
  if (!/^[A-Za-z0-9-]{1,127}$/.test(name)) {
    return { ok: false, error: `"${name}" is not a valid key name: up to 127 letters, digits and hyphens.` };
  }
  if (version !== '' && !/^[A-Za-z0-9]{1,64}$/.test(version)) {
    return { ok: false, error: `"${version}" is not a valid key version: letters and digits only.` };
  }
  return { ok: true, vault, name, version };
}
