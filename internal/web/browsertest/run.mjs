// Drives the Encryption page in headless Chromium for internal/web's
// browser_test.go, which starts a local cmk and passes what this needs in
// the environment:
//
//   CMK_URL          base URL of the service
//   CMK_ORG          the demo org
//   CMK_ARTIFACTS    where screenshots go
//   PLAYWRIGHT_CORE  path of the playwright-core package
//   CHROMIUM         the browser binary (Debian's /usr/bin/chromium)
//   plus per scenario: CMK_APIKEY, CMK_TOKEN, CMK_KEY_ID, CMK_KEY_NAME, CMK_BAD_KEY_ID,
//   CMK_HOOK_URL and CMK_SECRET_OUT (where the webhook secret shown is written),
//   CMK_AWS_ORG, CMK_AWS_TOKEN and CMK_AWS_KEY_ARN (the org whose key is in AWS KMS)
//
// Usage: node run.mjs <scenario>. Exits non-zero when a check fails, after
// saving a screenshot named <scenario>-FAILED.png.

import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const base = mustEnv('CMK_URL').replace(/\/$/, '');
const artifacts = mustEnv('CMK_ARTIFACTS');
const origin = new URL(base).origin;

function mustEnv(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`run.mjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
}

class CheckFailed extends Error {}

function expect(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

const started = Date.now();
function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

// ---------- browser ----------

async function open() {
  const profile = mkdtempSync(path.join(tmpdir(), 'cmk-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(10_000);
  const problems = [];
  // Nothing may leave the service's origin.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin !== origin && !url.startsWith('data:')) {
      problems.push(`request to another origin: ${url}`);
      return route.abort();
    }
    return route.continue();
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    // 4xx answers the page expects and handles (403 in the permission
    // scenario, 400 for a rejected key) are logged by Chromium as errors.
    if (/status of 40[0-9]/.test(text)) return;
    problems.push(`console error: ${text}`);
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { page, problems, close };
}

async function shot(page, name, { fullPage = true } = {}) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  log(`screenshot ${file}`);
}

async function gotoPage(page) {
  await page.goto(`${base}/ui/`);
  await page.waitForSelector('body[data-ready="true"]');
}

async function devLogin(page) {
  await gotoPage(page);
  await page.locator('#dev-login').click();
  await page.locator('#console').waitFor({ state: 'visible' });
  await page.locator('#health-state').waitFor();
  await page.locator('#app-id').waitFor({ state: 'attached' });
}

async function visible(page, selector) {
  return page.locator(selector).first().isVisible();
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()) || '';
}

// ---------- audits ----------

// Every visible form control has a label.
async function auditLabels(page) {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, textarea, select, progress')]
    .filter((e) => e.type !== 'hidden' && e.getClientRects().length > 0)
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
    .map((e) => e.id || e.name || e.outerHTML.slice(0, 60)));
  expect(unlabelled.length === 0, `form controls without a label: ${unlabelled.join(', ')}`);
}

// Every visible piece of text has at least 4.5:1 contrast (3:1 when large).
async function auditContrast(page) {
  const bad = await page.evaluate(() => {
    const parse = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const blend = (top, under) => ({ r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a), b: top.b * top.a + under.b * (1 - top.a), a: 1 });
    const lum = ({ r, g, b }) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0) {
          layers.push(c);
          if (c.a >= 1) break;
        }
      }
      let out = { r: 255, g: 255, b: 255, a: 1 };
      for (let i = layers.length - 1; i >= 0; i--) out = blend(layers[i], out);
      return out;
    };
    const out = [];
    const seen = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const node = walker.currentNode;
      const el = node.parentElement;
      if (!node.textContent.trim() || seen.has(el)) continue;
      seen.add(el);
      if (el.getClientRects().length === 0 || el.closest('.visually-hidden, [hidden], .skip')) continue;
      const cs = getComputedStyle(el);
      if (cs.visibility === 'hidden') continue;
      const bg = background(el);
      const fg = blend(parse(cs.color), bg);
      const l1 = lum(fg);
      const l2 = lum(bg);
      const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (Number(cs.fontWeight) >= 700 && size >= 18.66);
      if (ratio < (large ? 3 : 4.5)) out.push(`<${el.tagName.toLowerCase()} class="${el.className}"> "${node.textContent.trim().slice(0, 40)}": ${ratio.toFixed(2)}:1`);
    }
    return out;
  });
  expect(bad.length === 0, `text below the contrast minimum:\n  ${bad.join('\n  ')}`);
}

async function auditNarrow(page, name) {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(100);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow <= 0, `at 390px the page scrolls sideways by ${overflow}px`);
  await shot(page, name);
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function audit(page) {
  await auditLabels(page);
  await auditContrast(page);
}

// ---------- scenarios ----------

async function runCheck(page) {
  await page.locator('#preflight-run').click();
  await page.locator('#preflight-summary').waitFor();
  // Wait for the button to come back, i.e. this run's results.
  await page.waitForFunction(() => document.getElementById('preflight-run').textContent === 'Check my key');
}

// expectFailed checks that the preflight result of check is a failure with
// a message containing word and numbered steps.
async function expectFailed(page, check, word) {
  const summary = await text(page, '#preflight-summary');
  expect(/checks failed/.test(summary), `the summary says checks failed (got "${summary}")`);
  const item = page.locator(`#preflight-results li[data-check="${check}"]`);
  expect((await item.getAttribute('data-status')) === 'FAILED', `check ${check} failed`);
  expect((await item.locator('.mark').textContent()) === '✗', `check ${check} is marked ✗`);
  const msg = await item.locator('.check-msg').textContent();
  expect(msg.toLowerCase().includes(word), `check ${check} explains itself (got "${msg}")`);
  const stepsShown = await item.locator('ol.remedy li').count();
  expect(stepsShown >= 1, `check ${check} shows numbered steps (got ${stepsShown})`);
}

const scenarios = {
  // d: a token without the Manage Customer Managed Key permission, pasted
  // into the sign-in form with the keyboard, gets the notice and no controls.
  async 'no-permission'(page) {
    await gotoPage(page);
    expect(await visible(page, '#signin'), 'the sign-in form is shown first');
    expect(await visible(page, '#dev-login'), 'the dev login button is shown when the service offers it');
    await shot(page, 'd-signin');
    await auditLabels(page);

    await page.locator('#in-org').focus();
    await page.keyboard.type(mustEnv('CMK_ORG'));
    await page.keyboard.press('Tab');
    await page.keyboard.type(mustEnv('CMK_APIKEY'));
    await page.keyboard.press('Tab');
    await page.keyboard.insertText(mustEnv('CMK_TOKEN'));
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => ({ id: document.activeElement.id, outline: getComputedStyle(document.activeElement).outlineStyle }));
    expect(focused.id === 'signin-submit', `Tab from the token field reaches the Sign in button (got #${focused.id})`);
    expect(focused.outline !== 'none', 'the focused button shows a focus outline');
    await page.keyboard.press('Enter');

    await page.locator('#no-permission').waitFor({ state: 'visible' });
    const heading = await text(page, '#noperm-title');
    expect(heading.includes('Manage Customer Managed Key'), `the notice names the permission (got "${heading}")`);
    expect(!(await visible(page, '#console')), 'the encryption controls are hidden');
    for (const id of ['#config-submit', '#preflight-run', '#recheck', '#key-id', '#consent-url']) {
      expect(!(await visible(page, id)), `${id} is not shown without the permission`);
    }
    expect(await visible(page, '#sign-out'), 'the user can still sign out');
    await audit(page);
    await shot(page, 'd-no-permission');
  },

  // b: a key that fails the checks shows each failed check with numbered
  // steps; malformed identifiers are caught inline, the service's 400 too.
  async 'failed-preflight'(page) {
    await devLogin(page);
    const keyId = page.locator('#key-id');

    await keyId.fill('http://cmkweak.vault.azure.net/keys/small-key');
    await page.locator('#preflight-run').click();
    await page.locator('#key-id-error').waitFor({ state: 'visible' });
    expect((await text(page, '#key-id-error')).includes('https://'), 'an http identifier is refused inline, naming https://');
    expect((await keyId.getAttribute('aria-invalid')) === 'true', 'the field is marked invalid');

    // A 2048-bit key: the size check fails and is listed first; the
    // checks that do not depend on it still run; the round trip waits.
    const small = mustEnv('CMK_SMALL_KEY_ID');
    await keyId.fill(small);
    await runCheck(page);
    expect(!(await visible(page, '#key-id-error')), 'the inline error clears once the identifier is well-formed');
    await expectFailed(page, 'key_type_and_size', '2048');
    const first = page.locator('#preflight-results li').first();
    expect((await first.getAttribute('data-status')) === 'FAILED', 'the failure is listed first');
    const passed = await page.locator('#preflight-results li[data-status="PASSED"] .mark').first().textContent();
    expect(passed === '✓', 'passed checks are marked ✓');
    for (const check of ['soft_delete', 'purge_protection', 'key_operations']) {
      const st = await page.locator(`#preflight-results li[data-check="${check}"]`).getAttribute('data-status');
      expect(st === 'PASSED', `${check} is still checked after the size check failed (got ${st})`);
    }
    const waits = page.locator('#preflight-results li[data-check="wrap_unwrap_round_trip"]');
    expect((await waits.getAttribute('data-status')) === 'SKIPPED', 'the round trip is not run');
    expect(/waits for .*3072 bits/.test(await waits.locator('.check-msg').textContent()), 'the round trip says what it waits for');
    const label = await text(page, '#preflight-for');
    expect(label.includes(small), `the results name the key checked (got "${label}")`);
    expect((await page.locator('#preflight-for time').count()) === 1, 'the results say when they were made');
    expect(await page.locator('#config-submit').isDisabled(), 'Enable is not offered after a failed check');
    await shot(page, 'b-preflight-small-key');

    // Another identifier clears the results of the previous key.
    await keyId.fill('not-a-url');
    expect((await page.locator('#preflight-results').count()) === 0, 'the previous key\'s results are cleared when the field changes');

    // A good key in a vault without purge protection.
    await keyId.fill(mustEnv('CMK_NOPURGE_KEY_ID'));
    await runCheck(page);
    await expectFailed(page, 'purge_protection', 'purge');
    expect(await page.locator('#config-submit').isDisabled(), 'Enable is not offered after a failed check');
    await audit(page);
    await shot(page, 'b-preflight-failed');
    await auditNarrow(page, 'b-preflight-failed-390');

    // A well-shaped identifier on a host the service does not allow: the
    // service says why in a sentence, without an error chain, and nothing
    // can be enabled.
    await keyId.fill('https://cmkweak.example.com/keys/small-key');
    await runCheck(page);
    await expectFailed(page, 'key_identifier', 'not a key vault key identifier');
    const why = await page.locator('#preflight-results li[data-check="key_identifier"] .check-msg').textContent();
    expect(!/parse |MALFORMED_KEY_URI:/.test(why), `no error chain reaches the page (got "${why}")`);
    for (const step of await page.locator('#preflight-results ol.remedy li').allTextContents()) {
      expect(!step.includes('`'), `remedy steps are plain text (got "${step}")`);
    }
    await page.locator('#config-name').fill('Rejected');
    expect(await page.locator('#config-submit').isDisabled(), 'Enable is not offered for a key that failed');
    expect(!(await visible(page, '#job')), 'no enablement job was started');
    await shot(page, 'b-server-rejects-host');
  },

  // a: the whole enablement through the page.
  async enable(page) {
    await devLogin(page);
    expect((await page.locator('#health-state').getAttribute('data-state')) === 'SYSTEM_MANAGED', 'the org starts on system-managed keys');
    expect(/permanent/i.test(await text(page, '#setup-steps .notice.warn')), 'the irreversibility warning is shown');
    expect((await text(page, '#app-id')).trim().length > 0, 'the application id is shown');
    const bound = await text(page, '#bound-tenants');
    expect(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.test(bound), `the tenant bound to the org is shown (got "${bound}")`);
    const consent = await page.locator('#consent-link').getAttribute('href');
    expect(consent && consent.startsWith('https://'), `the consent link is an https URL (got ${consent})`);
    expect((await page.locator('#consent-url').inputValue()) === consent, 'the copy field holds the consent link');
    await page.locator('#copy-consent').click();
    await page.waitForFunction(() => document.getElementById('copy-consent').textContent === 'Copied');
    const roles = await text(page, '#setup-steps');
    expect(roles.includes('Key Vault Crypto Service Encryption User') && roles.includes('Managed HSM Crypto Service Encryption User'), 'both role names are given');
    expect(roles.includes('3072'), 'the key size requirement is given');
    await audit(page);
    await shot(page, 'a-system-managed');

    const keyId = mustEnv('CMK_KEY_ID');
    await page.locator('#key-id').fill(keyId);
    expect(await page.locator('#config-submit').isDisabled(), 'Enable is not offered before the key is checked');
    await page.locator('#preflight-run').click();
    await page.locator('#preflight-summary').waitFor();
    const summary = await text(page, '#preflight-summary');
    expect(/All \d+ checks passed/.test(summary), `the key passes every check (got "${summary}")`);
    const total = await page.locator('#preflight-results li').count();
    const passed = await page.locator('#preflight-results li[data-status="PASSED"]').count();
    expect(total > 5 && passed === total, `every check passed (${passed} of ${total})`);
    expect((await text(page, '#preflight-for')).includes(keyId), 'the results name the key checked');
    expect(await page.locator('#config-submit').isEnabled(), 'Enable is offered once the key passed');
    await shot(page, 'a-preflight-passed');

    // Changing the field withdraws Enable and the results, until checked again.
    await page.locator('#key-id').fill(keyId + 'x');
    expect(await page.locator('#config-submit').isDisabled(), 'Enable is withdrawn when the field changes');
    expect((await page.locator('#preflight-results').count()) === 0, 'the results are cleared when the field changes');
    await page.locator('#key-id').fill(keyId);
    expect(await page.locator('#config-submit').isDisabled(), 'Enable waits for a new check of the key');
    await runCheck(page);
    expect(await page.locator('#config-submit').isEnabled(), 'Enable is offered again once the key passed again');

    // The confirm dialog guards the submission; Escape cancels it.
    await page.locator('#config-name').fill('Config1');
    await page.locator('#config-submit').focus();
    await page.keyboard.press('Enter');
    await page.locator('#confirm').waitFor({ state: 'visible' });
    expect((await page.evaluate(() => document.activeElement.id)) === 'confirm-cancel', 'the dialog focuses Cancel first');
    await shot(page, 'a-confirm', { fullPage: false });
    await page.keyboard.press('Escape');
    await page.locator('#confirm').waitFor({ state: 'hidden' });
    await page.waitForTimeout(300);
    expect(!(await visible(page, '#job')), 'cancelling submits nothing');

    // Confirm with the keyboard: the confirm button waits for the org id
    // or the word ENABLE to be typed.
    await page.locator('#config-submit').focus();
    await page.keyboard.press('Enter');
    await page.locator('#confirm').waitFor({ state: 'visible' });
    expect(await page.locator('#confirm-ok').isDisabled(), 'the confirm button waits for the confirmation to be typed');
    await page.keyboard.press('Shift+Tab');
    expect((await page.evaluate(() => document.activeElement.id)) === 'confirm-typed', 'Shift+Tab from Cancel reaches the confirmation field');
    await page.keyboard.type('enable');
    expect(await page.locator('#confirm-ok').isDisabled(), 'a wrong confirmation keeps the button disabled');
    await page.locator('#confirm-typed').fill('');
    await page.keyboard.type('ENABLE');
    expect(await page.locator('#confirm-ok').isEnabled(), 'typing ENABLE enables the confirm button');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    expect((await page.evaluate(() => document.activeElement.id)) === 'confirm-ok', 'Tab reaches the confirm button');
    await page.keyboard.press('Enter');
    await page.locator('#job').waitFor({ state: 'visible' });

    const seen = [];
    let progressShot = false;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const st = await page.locator('#job-status').getAttribute('data-status').catch(() => null);
      if (st && seen[seen.length - 1] !== st) {
        seen.push(st);
        log(`job status ${st}`);
      }
      if (st === 'UPDATE_EXISTING_RESOURCES' && !progressShot) {
        progressShot = true;
        const label = await text(page, '#job-progress-box .progress-label');
        expect(/\d+ of \d+ data keys re-wrapped|Counting/.test(label), `the job shows counts while applying the key (got "${label}")`);
        expect((await page.locator('#job-progress').count()) === 1, 'a progress bar is shown while applying the key');
        expect((await page.locator('ol.stages li[aria-current="step"]').textContent()).includes('Apply the key'), 'the current stage is marked');
        await shot(page, 'a-progress');
      }
      if (st === 'COMPLETED' || st === 'FAILED') break;
      expect(Date.now() < deadline, `the job finishes within 30s (statuses seen: ${seen.join(' → ')})`);
      await page.waitForTimeout(100);
    }
    expect(seen.includes('UPDATE_EXISTING_RESOURCES'), `the page showed the key being applied (statuses seen: ${seen.join(' → ')})`);
    expect(seen[seen.length - 1] === 'COMPLETED', `the job completes (statuses seen: ${seen.join(' → ')}; ${await text(page, '#job-body')})`);
    const bar = page.locator('#job-progress');
    if (await bar.count()) {
      const [v, max] = [await bar.getAttribute('value'), await bar.getAttribute('max')];
      expect(v === max, `the progress bar is full when completed (${v} of ${max})`);
    }
    await page.locator('#health-state[data-state="HEALTHY"]').waitFor({ timeout: 15_000 });
    const keyName = (await text(page, '#health-key')).trim();
    expect(keyName === mustEnv('CMK_KEY_NAME'), `health shows the key name (got "${keyName}")`);
    expect((await text(page, '#health-vault')).startsWith('https://'), 'health shows the key vault');
    expect((await text(page, '#health-version')).trim().length > 5, 'health shows the key version');
    expect(await visible(page, '#recheck'), 'Re-check now is offered');
    expect(await visible(page, '#setup-done') && !(await visible(page, '#setup-steps')), 'the setup form gives way to a note that this is permanent');
    expect((await text(page, '#revocation-explanation')).length > 40, 'what revocation does is explained');
    expect(await visible(page, '#no-open-alerts'), 'no alerts are open');
    await audit(page);
    await shot(page, 'a-completed');
    await auditNarrow(page, 'a-completed-390');
  },

  // c, first half: the key was disabled in the vault.
  async 'key-disabled'(page) {
    await devLogin(page);
    await page.locator('#recheck').click();
    await page.locator('#health-state[data-state="REVOKED"]').waitFor({ timeout: 15_000 });
    expect(await visible(page, '#data-blocked'), 'the page says the data is unavailable');
    expect((await page.locator('#health-remedy li').count()) >= 1, 'health lists numbered steps');
    const alert = page.locator('#alerts-open article[data-kind="KEY_ACCESS_DISABLED"]');
    await alert.waitFor({ timeout: 15_000 });
    const title = await alert.locator('h4').textContent();
    expect(title.includes('Key access disabled'), `the alert is titled by its kind (got "${title}")`);
    expect((await alert.locator('ol.remedy li').count()) >= 3, 'the alert lists numbered steps');
    const body = await alert.textContent();
    for (const word of ['First seen', 'Last seen', 'Occurrences', 'Cause']) expect(body.includes(word), `the alert shows ${word}`);
    await audit(page);
    await shot(page, 'c-revoked');
    await auditNarrow(page, 'c-revoked-390');

    const id = await alert.getAttribute('data-alert-id');
    await page.locator(`#ack-${id}`).click();
    await page.locator(`#alerts-open article[data-alert-id="${id}"] .badge.neutral`).waitFor();
    expect((await page.locator(`#ack-${id}`).count()) === 0, 'an acknowledged alert has no Acknowledge button');
    await shot(page, 'c-acknowledged');
  },

  // g: after the key flapped, disabling it again shows "Key access
  // disabled" as an open alert next to the flapping notification.
  async 'flapping-then-disabled'(page) {
    await devLogin(page);
    await page.locator('#health-state[data-state="REVOKED"]').waitFor({ timeout: 15_000 });
    const blocking = page.locator('#alerts-open article[data-kind="KEY_ACCESS_DISABLED"]');
    await blocking.waitFor({ timeout: 15_000 });
    const flapping = page.locator('#alerts-open article[data-kind="ALERT_NOTIFICATION"]');
    await flapping.first().waitFor({ timeout: 15_000 });
    expect((await flapping.first().textContent()).includes('FLAPPING'), 'the flapping notification names its cause');
    expect((await blocking.textContent()).includes('Your data is unavailable'), 'the blocking alert says the data is unavailable');
    await audit(page);
    await shot(page, 'g-flapping-then-disabled');
  },

  // e: webhooks added, tested and deleted from the page with the keyboard
  // alone; the signing secret is shown once.
  async webhooks(page) {
    await devLogin(page);
    await page.locator('#no-webhooks').waitFor();
    const url = page.locator('#webhook-url');

    await url.focus();
    await page.keyboard.type('ftp://example.com/hook');
    await page.keyboard.press('Enter');
    await page.locator('#webhook-url-error').waitFor({ state: 'visible' });
    expect((await text(page, '#webhook-url-error')).includes('https://'), 'a non-http address is refused with what to type');
    expect((await url.getAttribute('aria-invalid')) === 'true', 'the field is marked invalid');

    await url.fill('');
    await page.keyboard.type(mustEnv('CMK_HOOK_URL'));
    await page.keyboard.press('Enter');
    await page.locator('#webhook-secret-value').waitFor();
    const secret = await page.locator('#webhook-secret-value').inputValue();
    expect(/^[0-9a-f]{64}$/.test(secret), `the signing secret is shown once (got ${secret.length} characters)`);
    expect(await page.evaluate(() => document.activeElement.id === 'webhook-secret-value'), 'focus moves to the secret');
    writeFileSync(mustEnv('CMK_SECRET_OUT'), secret);
    const item = page.locator('#webhooks li.webhook');
    await item.waitFor();
    expect((await item.count()) === 1, 'the new webhook is listed');
    const id = await item.getAttribute('data-webhook-id');
    await audit(page);
    await shot(page, 'e-webhook-added');

    await page.locator('#secret-done').focus();
    await page.keyboard.press('Enter');
    expect(!(await visible(page, '#webhook-secret-value')), 'the secret is gone once saved');

    await page.locator(`#test-${id}`).focus();
    await page.keyboard.press('Enter');
    await page.locator(`#result-${id}.ok`).waitFor();
    const result = await text(page, `#result-${id}`);
    expect(/^Delivered: your receiver answered HTTP 204/.test(result), `the test result says it was delivered (got "${result}")`);
    await shot(page, 'e-webhook-tested');

    page.once('dialog', (d) => d.accept());
    await page.locator(`#delete-${id}`).focus();
    await page.keyboard.press('Enter');
    await page.locator('#no-webhooks').waitFor();
    await shot(page, 'e-webhook-deleted');
  },

  // f: an org whose key is in AWS KMS, signed in with its own token:
  // provider choice, its statements with a copy button, the ARN checked as
  // typed, the key checked, enabled, and shown in the health card.
  async 'aws-enable'(page) {
    await gotoPage(page);
    await page.locator('#in-org').fill(mustEnv('CMK_AWS_ORG'));
    await page.locator('#in-apikey').fill(mustEnv('CMK_APIKEY'));
    await page.locator('#in-token').fill(mustEnv('CMK_AWS_TOKEN'));
    await page.locator('#signin-submit').click();
    await page.locator('#health-state[data-state="SYSTEM_MANAGED"]').waitFor();

    await page.locator('input[name="provider"][value="AWS_KMS"]').focus();
    await page.keyboard.press('Space');
    await page.locator('#aws-policy').waitFor();
    const policy = JSON.parse(await text(page, '#aws-policy'));
    const org = mustEnv('CMK_AWS_ORG');
    expect(policy.length === 3 && policy.some((st) => st.Condition.StringEquals['kms:EncryptionContext:cmk:org'] === org),
      'the statements bind the key to this org\'s encryption context');
    expect(!(await visible(page, '#app-body')), 'the Azure steps are hidden');
    await page.locator('#copy-aws-policy').click();
    await page.waitForFunction(() => document.getElementById('copy-aws-policy').textContent === 'Copied');
    expect((await text(page, '#key-id-label')) === 'Key ARN', 'the field asks for a key ARN');

    await page.locator('#key-id').fill('arn:aws:kms:eu-north-9:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab');
    await page.locator('#preflight-run').click();
    const err = await text(page, '#key-id-error');
    expect(/platform uses keys in/.test(err), `an ARN in another Region is refused before any call (got "${err}")`);
    await audit(page);
    await shot(page, 'f-aws-setup');

    await page.locator('#key-id').fill(mustEnv('CMK_AWS_KEY_ARN'));
    await runCheck(page);
    const summary = await text(page, '#preflight-summary');
    expect(/All \d+ checks passed/.test(summary), `the AWS key passes every check (got "${summary}")`);
    expect((await page.locator('#preflight-results li[data-check="aws_key_policy_org_context"][data-status="PASSED"]').count()) === 1, 'the org-context check is listed');
    expect((await page.locator('#preflight-results li[data-check="aws_key_policy_binds_org"][data-status="PASSED"]').count()) === 1, 'the check that the policy binds the org is listed');

    await page.locator('#config-name').fill('AwsConfig');
    await page.locator('#config-submit').click();
    await page.locator('#confirm').waitFor({ state: 'visible' });
    await page.locator('#confirm-typed').fill('ENABLE');
    await page.locator('#confirm-ok').click();
    await page.locator('#job-status[data-status="COMPLETED"]').waitFor({ timeout: 30_000 });
    await page.locator('#health-state[data-state="HEALTHY"]').waitFor({ timeout: 15_000 });
    expect((await text(page, '#health-key-arn')).trim() === mustEnv('CMK_AWS_KEY_ARN'), 'health shows the key ARN');
    expect((await text(page, '#health-aws-state')).trim() === 'Enabled', 'health shows the AWS key state');
    await audit(page);
    await shot(page, 'f-aws-enabled');
  },

  // c, second half: the key was enabled again; the page notices by itself.
  async 'key-restored'(page) {
    await devLogin(page);
    await page.locator('#health-state[data-state="HEALTHY"]').waitFor({ timeout: 15_000 });
    await page.locator('#no-open-alerts').waitFor({ timeout: 15_000 });
    const resolved = page.locator('#alerts-resolved article[data-kind="KEY_ACCESS_DISABLED"]');
    await resolved.waitFor({ state: 'attached' });
    expect(!(await visible(page, '#alerts-resolved article')), 'resolved alerts are collapsed');
    await page.locator('#resolved-summary').click();
    await resolved.waitFor();
    expect((await resolved.locator('.badge.ok').textContent()) === 'Resolved', 'the alert is marked resolved');
    expect((await resolved.textContent()).includes('Resolved'), 'the resolution time is shown');
    expect((await text(page, '#health-key')).trim() === mustEnv('CMK_KEY_NAME'), 'health shows the key again');
    await audit(page);
    await shot(page, 'c-resolved');
  },

  // f: after a revocation during which the lake and the profile store
  // refused requests, and the restore, the History section lists the
  // episode with both stores, the access report downloads as a printable
  // page, and the audit trail filters and downloads as CSV.
  async history(page) {
    await devLogin(page);
    const newest = page.locator('#history-list ol.timeline > li.episode').first();
    await newest.waitFor({ timeout: 15_000 });
    const episode = await newest.textContent();
    expect(episode.includes('Worst: REVOKED'), `the newest episode's worst state is REVOKED (got "${episode.slice(0, 200)}")`);
    for (const store of ['Data lake', 'Profile store']) {
      const row = newest.locator('table.stores tbody tr', { hasText: store }).first();
      expect(await row.count() === 1, `the episode lists the ${store}`);
      const cells = await row.locator('td').allTextContents();
      expect(Number(cells[2]) >= 1, `the ${store} refused at least one request (got ${cells[2]})`);
      expect(cells[3] !== 'not yet', `the ${store} was served again (got "${cells[3]}")`);
    }
    expect(await newest.locator('time').count() >= 4, 'the episode shows its times');
    await auditLabels(page);
    await page.locator('#history').screenshot({ path: path.join(artifacts, 'f-history.png') });
    log(`screenshot ${path.join(artifacts, 'f-history.png')}`);

    const [report] = await Promise.all([page.waitForEvent('download'), page.locator('#report-html').click()]);
    expect(report.suggestedFilename() === 'cmk-access-report.html', `the report downloads as cmk-access-report.html (got ${report.suggestedFilename()})`);
    const html = readFileSync(await report.path(), 'utf8');
    expect(html.includes('Customer-managed key access report') && html.includes('<td>lake</td>') && html.includes('<td>profile</td>'), 'the report names the episode\'s stores');
    expect(!/<script/i.test(html), 'the report holds no script');
    const reportFile = path.join(artifacts, 'f-access-report.html');
    writeFileSync(reportFile, html);
    // The report as a reader sees it, printed.
    const view = await page.context().newPage();
    await view.setContent(html);
    await view.emulateMedia({ media: 'print' });
    await shot(view, 'f-access-report');
    await view.close();

    await page.locator('#audit-op').fill('revocation');
    await page.locator('#audit-apply').click();
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#audit-list table.audit-table tbody tr')];
      return rows.length > 0 && rows.every((r) => r.children[2].textContent === 'revocation');
    });
    const [csv] = await Promise.all([page.waitForEvent('download'), page.locator('#audit-csv').click()]);
    const body = readFileSync(await csv.path(), 'utf8');
    expect(body.startsWith('at,actor,operation'), `the CSV has its header row (got "${body.slice(0, 40)}")`);
    expect(body.includes(',revocation,'), 'the CSV holds the filtered entries');
    expect(!body.includes(',unwrap,'), 'the CSV keeps the filter');
    await page.locator('#audit').screenshot({ path: path.join(artifacts, 'f-audit.png') });
    log(`screenshot ${path.join(artifacts, 'f-audit.png')}`);
  },
};

async function main() {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    console.error(`run.mjs: unknown scenario "${name}"; one of: ${Object.keys(scenarios).join(', ')}`);
    process.exit(2);
  }
  const { page, problems, close } = await open();
  let failed = false;
  try {
    await scenario(page);
    expect(problems.length === 0, `the page had problems:\n  ${problems.join('\n  ')}`);
    log(`scenario ${name}: passed`);
  } catch (err) {
    failed = true;
    console.error(`scenario ${name}: FAILED: ${err instanceof CheckFailed ? err.message : err.stack || err}`);
    if (problems.length) console.error(`page problems:\n  ${problems.join('\n  ')}`);
    await shot(page, `${name}-FAILED`).catch(() => {});
  } finally {
    await close();
  }
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
