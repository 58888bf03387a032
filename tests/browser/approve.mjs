// Approves a held intent through the Portcullis web UI in real headless Chromium, like a
// person would: log in with a login token, open the intent, read it, give a reason, click
// Approve, and see it executed.
//
//   PORTCULLIS_LOGIN_TOKEN=pcp_… node approve.mjs --url http://127.0.0.1:PORT --intent ID \
//     --screenshot out.png [--screenshot-after done.png] [--action NAME] [--expect TEXT]…
//
// The login token comes from the environment so that it never shows in a process list.
// Exit code 0 when every check passed; otherwise 1 with the reason on standard error.
// Run by crates/portcullis/tests/e2e/browser.rs.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];
const TIMEOUT_MS = 30_000;

function fail(message) {
  throw new Error(message);
}

function options() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      intent: { type: 'string' },
      screenshot: { type: 'string' },
      'screenshot-after': { type: 'string' },
      action: { type: 'string' },
      expect: { type: 'string', multiple: true, default: [] },
    },
    strict: true,
  });
  const token = process.env.PORTCULLIS_LOGIN_TOKEN;
  if (!values.url || !values.intent || !values.screenshot || !token) {
    fail('usage: PORTCULLIS_LOGIN_TOKEN=… node approve.mjs --url URL --intent ID --screenshot PATH [--action NAME] [--expect TEXT]…');
  }
  const url = new URL(values.url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    fail(`refusing to drive a browser at ${url.host}: loopback only`);
  }
  if (!/^[A-Za-z0-9_-]+$/.test(values.intent)) {
    fail(`not an intent id: ${values.intent}`);
  }
  return { ...values, base: url.origin, token };
}

async function run(opts, page) {
  // Logging in.
  await page.goto(`${opts.base}/ui`);
  await page.fill('input[name="token"]', opts.token);
  await Promise.all([page.waitForURL('**/ui/approvals'), page.click('button[type="submit"]:has-text("Log in")')]);
  const pending = await page.locator(`a[href="/ui/approvals/${opts.intent}"]`).count();
  if (pending < 1) fail(`the intent ${opts.intent} is not in the list of pending approvals`);

  // The detail page shows what will run.
  await page.goto(`${opts.base}/ui/approvals/${opts.intent}`);
  const action = (await page.textContent('#action'))?.trim();
  if (!action) fail('the detail page shows no action');
  if (opts.action && action !== opts.action) fail(`the detail page shows action ${action}, expected ${opts.action}`);
  const state = (await page.textContent('#state'))?.trim();
  if (state !== 'pending') fail(`the intent is ${state}, expected pending`);
  const payload = (await page.textContent('#payload')) ?? '';
  if (!payload.trim().startsWith('{')) fail(`the payload is not shown as JSON: ${payload}`);
  const text = await page.textContent('main');
  for (const wanted of opts.expect) {
    if (!text.includes(wanted)) fail(`the detail page does not show ${JSON.stringify(wanted)}`);
  }
  const sha = (await page.textContent('#payload-sha256'))?.trim();
  const bound = await page.getAttribute('form.approve input[name="payload_sha256"]', 'value');
  if (!sha || sha !== bound) fail(`the approve form is bound to ${bound}, the page shows ${sha}`);

  mkdirSync(dirname(opts.screenshot), { recursive: true });
  await page.screenshot({ path: opts.screenshot, fullPage: true });

  // Approving.
  await page.fill('form.approve textarea[name="reason"]', 'Checked the payload in the browser test');
  await Promise.all([
    page.waitForURL(`**/ui/approvals/${opts.intent}?done=approved`),
    page.click('form.approve button[type="submit"]'),
  ]);
  const notice = (await page.textContent('#notice'))?.trim();
  if (notice !== 'You approved this intent.') fail(`no confirmation after approving: ${notice}`);
  const after = (await page.textContent('#state'))?.trim();
  if (!['approved', 'executing', 'executed'].includes(after)) fail(`after approving the intent is ${after}`);
  if ((await page.locator('form.approve').count()) !== 0) fail('the approve form is still offered after approving');
  const votes = (await page.textContent('#votes')) ?? '';
  if (!votes.includes('Checked the payload in the browser test')) fail('the vote and its reason are not listed');
  if (opts['screenshot-after']) await page.screenshot({ path: opts['screenshot-after'], fullPage: true });
  console.log(`approved ${opts.intent} (${action}); state ${after}`);
}

async function main() {
  const opts = options();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: TIMEOUT_MS });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, javaScriptEnabled: false });
    context.setDefaultTimeout(TIMEOUT_MS);
    const page = await context.newPage();
    const problems = [];
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    await run(opts, page);
    if (problems.length) fail(`the browser reported errors: ${problems.join('; ')}`);
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`browser test failed: ${e?.message ?? e}`);
    process.exit(1);
  },
);
