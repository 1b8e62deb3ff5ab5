// Drives the dashboard in Debian's headless Chromium with playwright-core (no bundled browser):
// signs in with a token, reads the overview, opens a charge's ledger and the audit trail filtered
// by that charge, and takes a full-page screenshot of each. Prints what it saw as one JSON line.
//   node tests/browser/dashboard.mjs <base url> <token> <charge id> <screenshot directory>
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'fakes', 'package.json'));
const { chromium } = require('playwright-core');

const [base, token, charge, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking', '--no-first-run', '--disable-extensions'],
});
const rows = async (page, selector) =>
  page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) =>
    [...tr.querySelectorAll('td')].map((td) => td.innerText.trim())));
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${base}/dashboard`);
  const login = await page.isVisible('input[name=token]');
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  await page.waitForSelector('table#apps');
  const apps = await rows(page, 'table#apps');
  const refunds = await rows(page, 'table#refunds');
  const refundsVisible = await page.isVisible('table#refunds');
  await page.screenshot({ path: path.join(shots, 'overview.png'), fullPage: true });

  await page.click(`table#refunds a[href="/dashboard/charges/${charge}"] >> nth=0`);
  await page.waitForSelector('table#charge');
  const ledger = await page.$$eval('table#charge tr', (trs) => trs.map((tr) => tr.innerText.trim()));
  await page.screenshot({ path: path.join(shots, 'charge.png'), fullPage: true });

  await page.goto(`${base}/dashboard/audit?charge_id=${encodeURIComponent(charge)}`);
  const audit = await rows(page, 'table#audit');
  await page.screenshot({ path: path.join(shots, 'audit.png'), fullPage: true });

  await page.goto(`${base}/dashboard/verify`);
  const verify = (await page.innerText('#verify-result')).trim();
  console.log(JSON.stringify({ login, apps, refunds, refundsVisible, ledger, audit, verify }));
} finally {
  await browser.close();
}
