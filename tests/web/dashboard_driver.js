#!/usr/bin/env node
/* dashboard_driver.js - drives headless Chromium for
 * tests/integration/test_dashboard.py: the test sends one JSON command per
 * line on stdin and reads one JSON answer per line on stdout
 * ({"ok":true,"value":...} or {"ok":false,"error":"..."}). The assertions
 * are the test's; this file only runs the browser and reads the page.
 *
 * Needs playwright-core (NODE_PATH points at the build tree's copy, installed
 * by the test with npm) and Debian's chromium (CM_CHROMIUM, default
 * /usr/bin/chromium). Commands:
 *   {"cmd":"open","url":U,"width":W,"height":H}  new page (closes the last)
 *   {"cmd":"viewport","width":W,"height":H}
 *   {"cmd":"wait","selector":S,"timeout_ms":T}     until S is visible
 *   {"cmd":"snapshot"}                             what the page shows (below)
 *   {"cmd":"fill","selector":S,"value":V}
 *   {"cmd":"click","selector":S}
 *   {"cmd":"screenshot","path":P}                  full page PNG
 *   {"cmd":"close"}                                closes the browser, exits
 */
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

let browser = null;
let page = null;
const pageErrors = [];

/* Runs in the page: the dashboard as a user sees it, read from the DOM
 * (numbers from the data-value the text was formatted from). */
function readDashboard() {
  const num = (node) => {
    if (!node) return undefined;
    const v = node.dataset.value;
    return v === '' || v === undefined ? null : Number(v);
  };
  const visible = (node) => !!node && !node.closest('[hidden]') && node.getClientRects().length > 0;
  const jobs = [...document.querySelectorAll('#jobs [data-job]')].map((card) => {
    const f = (k) => card.querySelector('[data-field="' + k + '"]');
    const actions = card.querySelector('.actions');
    return {
      name: card.dataset.job,
      state: card.dataset.state,
      stateText: card.querySelector('.state').textContent,
      done: num(f('done')), leased: num(f('leased')), pending: num(f('pending')),
      dead: num(f('dead')), total: num(f('total')), records: num(f('records')),
      rate: num(f('rate')), eta: num(f('eta')),
      text: card.innerText,
      actionsVisible: visible(actions),
      buttons: [...card.querySelectorAll('button[data-action]')].map((b) => ({
        action: b.dataset.action, disabled: b.disabled, visible: visible(b),
      })),
      message: (card.querySelector('.msg') || {}).textContent || '',
    };
  });
  const members = [...document.querySelectorAll('#members tbody tr')].map((tr) => ({
    id: tr.dataset.member,
    role: tr.dataset.role,
    version: tr.querySelector('[data-field="version"]').textContent,
    inflight: num(tr.querySelector('[data-field="inflight"]')),
    heartbeat: num(tr.querySelector('[data-field="heartbeat"]')),
    text: tr.innerText,
  }));
  const versions = [...document.querySelectorAll('#versions tbody tr')].map((tr) => ({
    name: tr.dataset.version,
    acked: Number(tr.querySelector('[data-field="acked"]').textContent.replace(/,/g, '')),
    errorRatio: num(tr.querySelector('[data-field="error_ratio"]')),
  }));
  const dead = [...document.querySelectorAll('#dead .dead-job')].map((d) => ({
    job: d.dataset.job,
    heading: (d.querySelector('h3') || {}).textContent || '',
    rows: [...d.querySelectorAll('tbody tr')].map((tr) => ({
      index: Number(tr.dataset.index),
      attempts: Number(tr.children[1].textContent.replace(/,/g, '')),
      reason: tr.children[2].textContent,
    })),
  }));
  const line = document.querySelector('#chart svg polyline');
  const notice = document.getElementById('notice');
  return {
    polledAt: Number(document.getElementById('updated').dataset.polledAt || 0),
    conn: document.getElementById('conn').textContent,
    loadMark: window.__cmLoadMark || null,
    jobs, members, versions, dead,
    chartSamples: line ? Number(line.dataset.samples) : 0,
    notice: notice && !notice.hidden ? notice.textContent : '',
    storage: {
      session: Object.keys(sessionStorage),
      local: Object.keys(localStorage),
      url: location.href,
    },
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  };
}

async function run(c) {
  switch (c.cmd) {
    case 'open': {
      if (!browser) {
        const args = [];
        if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
        browser = await chromium.launch({
          executablePath: process.env.CM_CHROMIUM || '/usr/bin/chromium', headless: true, args,
          timeout: 60000,
        });
      }
      if (page) await page.close();
      page = await browser.newPage({ viewport: { width: c.width || 1280, height: c.height || 800 } });
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      // Script errors, not failed requests: a 404 on /jobs is how the page
      // learns that the fetcher has no job API.
      page.on('console', (m) => {
        if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) pageErrors.push('console: ' + m.text());
      });
      const r = await page.goto(c.url, { waitUntil: 'load', timeout: 30000 });
      // A mark that a reload would wipe: the test checks the page updates
      // by itself.
      await page.evaluate(() => { window.__cmLoadMark = String(Math.random()); });
      return { status: r ? r.status() : null };
    }
    case 'viewport':
      await page.setViewportSize({ width: c.width, height: c.height });
      return null;
    case 'wait':
      await page.waitForSelector(c.selector, { state: 'visible', timeout: c.timeout_ms || 15000 });
      return null;
    case 'snapshot': {
      const v = await page.evaluate(readDashboard);
      v.pageErrors = pageErrors.slice();
      return v;
    }
    case 'fill':
      await page.fill(c.selector, c.value, { timeout: 10000 });
      return null;
    case 'click':
      await page.click(c.selector, { timeout: 10000 });
      return null;
    case 'screenshot':
      await page.screenshot({ path: c.path, fullPage: true, timeout: 30000 });
      return null;
    case 'close':
      if (browser) await browser.close();
      browser = null;
      return null;
    default:
      throw new Error('unknown command ' + c.cmd);
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let out;
    let c = {};
    try {
      c = JSON.parse(line);
      out = { ok: true, value: await run(c) };
    } catch (e) {
      out = { ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
    if (c.cmd === 'close') process.exit(0);
  });
});
rl.on('close', () => { chain.then(async () => { if (browser) await browser.close(); process.exit(0); }); });
