// Headless Chromium end-to-end test of the fedpeg web app, driven by
// tests/tests/explorer.rs (which runs the federation and bitcoind).
//
// The driver restarts the node serving the pages once (`WAIT restart`):
// the home page must carry on by itself.
//
// Protocol on stdio, one line each: the script prints `STEP …` (progress),
// `METRIC …` (measurements), `SHOT <path>` (screenshots) and
// `WAIT <action> [json]`, after which it waits for the driver to do the
// action and answer `ok` on stdin. It exits 0 after `DONE`, else 1 with
// the reason on stderr.
//
// Environment: FEDPEG_WEB (base URL), FEDPEG_OUTPOINT (a deposit still
// confirming), FEDPEG_ACCOUNT (its account), FEDPEG_TXID (a finalized
// transfer), FEDPEG_SHOTS (screenshot folder), CHROMIUM (default
// /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env('FEDPEG_WEB');
const outpoint = env('FEDPEG_OUTPOINT');
const account = env('FEDPEG_ACCOUNT');
const txid = env('FEDPEG_TXID');
const shots = env('FEDPEG_SHOTS');
mkdirSync(shots, { recursive: true });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function wait(action, data) {
  console.log(`WAIT ${action}${data === undefined ? '' : ' ' + JSON.stringify(data)}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'ok') throw new Error(`driver answered ${JSON.stringify(value)} to ${action}`);
}
const step = (s) => console.log(`STEP ${s}`);

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`SHOT ${path}`);
}

const userData = mkdtempSync(join(tmpdir(), 'fedpeg-chromium-'));
const context = await chromium.launchPersistentContext(userData, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const problems = [];
// While the driver restarts the node, the browser's reconnect attempts are refused.
let restarting = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A 4xx page the test asks for on purpose is reported as a failed
    // resource load; anything else (script errors, CSP violations) fails.
    const expected = m.text().startsWith('Failed to load resource: the server responded with a status of 400')
      || (restarting && m.text().includes('net::ERR_CONNECTION_REFUSED'));
    if (m.type() === 'error' && !expected) {
      problems.push(`console error on ${page.url()}: ${m.text()}`);
    }
  });
  // Offline: nothing may be loaded from anywhere but the node.
  await page.route('**/*', (route) =>
    route.request().url().startsWith(base) ? route.continue() : route.abort());

  step('home shows a block finalized after the page loaded');
  const t0 = Date.now();
  const home = await page.goto(base + '/', { waitUntil: 'load' });
  if (home.status() !== 200) throw new Error(`home: HTTP ${home.status()}`);
  const loadedTip = Number(await page.textContent('#tip-height'));
  const marker = await page.evaluate(() => (window.__fedpegMarker = Math.random()));
  await page.waitForFunction(
    (tip) => [...document.querySelectorAll('#blocks tr[data-height]')].some((r) => Number(r.dataset.height) > tip),
    loadedTip, { timeout: 30000 });
  const newTip = Number(await page.textContent('#tip-height'));
  if (!(newTip > loadedTip)) throw new Error(`tip did not move live: ${loadedTip} -> ${newTip}`);
  const perf = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const res = performance.getEntriesByType('resource').filter((r) => !r.name.includes('/live/'));
    return {
      fcp_ms: fcp ? Math.round(fcp.startTime) : -1,
      html_bytes: nav.transferSize, html_decoded_bytes: nav.decodedBodySize,
      assets_bytes: res.reduce((s, r) => s + r.transferSize, 0),
      requests: 1 + res.length,
    };
  });
  console.log(`METRIC home ${JSON.stringify({ ...perf, loaded_tip: loadedTip, live_tip: newTip, live_after_ms: Date.now() - t0 })}`);
  if ((await page.textContent('#live-status')) !== 'live') throw new Error('live status is not "live"');
  if ((await page.evaluate(() => window.__fedpegMarker)) !== marker) throw new Error('home reloaded');
  await shot(page, 'home');

  step('the live list survives a restart of the node: no gap, no repeat, no reload');
  const before = Number(await page.textContent('#tip-height'));
  restarting = true;
  await wait('restart');
  await page.waitForFunction((tip) => Number(document.getElementById('tip-height').textContent) > tip + 3,
    before, { timeout: 60000 });
  restarting = false;
  const heights = await page.$$eval('#blocks tr[data-height]', (rows) => rows.map((r) => Number(r.dataset.height)));
  for (let i = 1; i < heights.length; i++) {
    if (heights[i] !== heights[i - 1] - 1) throw new Error(`blocks after the restart are not contiguous: ${heights}`);
  }
  if ((await page.evaluate(() => window.__fedpegMarker)) !== marker) throw new Error('home reloaded');
  console.log(`METRIC restart ${JSON.stringify({ tip_before: before, rows: heights.length, newest: heights[0] })}`);

  step('peg tracker follows the deposit from CONFIRMING to MINTED without reload');
  await page.goto(base + '/track?q=' + encodeURIComponent(outpoint));
  const confirming = await page.getAttribute('.track-item[data-kind="peg_in"]', 'data-stage');
  if (!confirming.startsWith('CONFIRMING')) throw new Error(`tracker shows ${confirming}, not CONFIRMING`);
  console.log(`METRIC tracker ${JSON.stringify({ first_stage: confirming })}`);
  const trackMarker = await page.evaluate(() => (window.__fedpegMarker = Math.random()));
  await page.waitForSelector('#live-status:text("live")', { timeout: 10000 });
  await shot(page, 'tracker-confirming');
  await wait('mine');
  const seen = new Set([confirming]);
  const t1 = Date.now();
  for (;;) {
    const s = await page.getAttribute('.track-item[data-kind="peg_in"]', 'data-stage');
    seen.add(s);
    if (s === 'MINTED') break;
    if (Date.now() - t1 > 90000) throw new Error(`still ${s} after 90 s; saw ${[...seen]}`);
    await page.waitForTimeout(200);
  }
  if ((await page.evaluate(() => window.__fedpegMarker)) !== trackMarker) throw new Error('tracker page reloaded');
  console.log(`METRIC tracker ${JSON.stringify({ stages_seen: [...seen], minted_after_ms: Date.now() - t1 })}`);
  await shot(page, 'tracker-minted');
  const mintedHeight = Number(await page.textContent('.track-item[data-kind="peg_in"] a[href^="/block/"]'));

  step('audit shows reserves and supply');
  const audit = await page.goto(base + '/audit');
  if (audit.status() !== 200) throw new Error(`audit: HTTP ${audit.status()}`);
  const figures = {};
  for (const id of ['available', 'locked', 'pending-change', 'supply', 'queued', 'in-batches', 'fee-pool']) {
    const el = await page.$(`#r-${id}`);
    const sats = Number(await el.getAttribute('data-sats'));
    const text = (await el.textContent()).trim();
    const want = `${Math.floor(sats / 1e8)}.${String(sats % 1e8).padStart(8, '0')} BTC`;
    if (text !== want) throw new Error(`#r-${id} shows ${text}, data-sats says ${want}`);
    figures[id] = sats;
  }
  figures.utxos = await page.$$eval('#utxos tr', (rows) => rows.map((r) => r.cells[0].textContent));
  await shot(page, 'audit');
  await wait('audit', figures);

  step('a bad search shows the message');
  await page.goto(base + '/');
  await page.fill('#search', 'not a thing!');
  const [bad] = await Promise.all([page.waitForNavigation(), page.press('#search', 'Enter')]);
  if (bad.status() !== 400) throw new Error(`bad search: HTTP ${bad.status()}`);
  const msg = await page.textContent('#error');
  if (!msg.includes('is not something this explorer can look up')) throw new Error(`bad search says: ${msg}`);
  await shot(page, 'search-error');

  step('block, transaction and account pages');
  for (const [name, path, must] of [
    ['block', `/block/${mintedHeight}`, 'minted to'],
    ['transaction', `/tx/${txid}`, 'final in block'],
    ['account', `/account/${account}`, 'MINTED'],
  ]) {
    const r = await page.goto(base + path);
    if (r.status() !== 200) throw new Error(`${name}: HTTP ${r.status()}`);
    const body = await page.textContent('main');
    if (!body.includes(must)) throw new Error(`${name} page lacks "${must}"`);
    await shot(page, name);
  }
  // Search by height lands on the block page.
  await page.fill('#search', String(mintedHeight));
  await Promise.all([page.waitForNavigation(), page.press('#search', 'Enter')]);
  if (!page.url().endsWith(`/block/${mintedHeight}`)) throw new Error(`search by height went to ${page.url()}`);

  if (problems.length) throw new Error(problems.join('\n'));
  console.log('DONE');
} catch (e) {
  console.error(e.stack || String(e));
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(userData, { recursive: true, force: true });
  process.exit(process.exitCode || 0);
}
