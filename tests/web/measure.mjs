// Measures the web app's pages in headless Chromium: bytes transferred
// (HTML, and HTML plus its script and stylesheet) and time to first
// contentful paint, median of RUNS cold loads (fresh browser context each).
//
//   node tests/web/measure.mjs http://127.0.0.1:8080 [RUNS]
//
// Prints one JSON line per page. CHROMIUM overrides /usr/bin/chromium.
import { chromium } from 'playwright-core';

const base = process.argv[2] || 'http://127.0.0.1:8080';
const runs = Number(process.argv[3] || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const first = await browser.newPage();
  await first.goto(base + '/');
  const block = await first.getAttribute('#blocks tr[data-height] a', 'href');
  await first.close();
  for (const path of ['/', '/audit', '/track', block]) {
    const fcp = [], html = [], total = [];
    for (let i = 0; i < runs; i++) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(base + path, { waitUntil: 'load' });
      await page.waitForFunction(() => performance.getEntriesByName('first-contentful-paint').length > 0);
      const m = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource').filter((r) => !r.name.includes('/live/'));
        return {
          fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime,
          html: nav.transferSize,
          total: nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0),
        };
      });
      fcp.push(m.fcp); html.push(m.html); total.push(m.total);
      await ctx.close();
    }
    console.log(JSON.stringify({ page: path, runs, fcp_ms_median: Math.round(median(fcp)), fcp_ms_max: Math.round(Math.max(...fcp)), html_bytes: median(html), total_bytes: median(total) }));
  }
} finally {
  await browser.close();
}
