'use strict';
// console_e2e.js — drives dynd's web console in headless chromium (playwright-core, Debian's
// browser: nothing is downloaded). Run by tests/integration/test_console.sh, which starts dynd
// with auth on and passes, in the environment:
//   E2E_URL       base URL of dynd            E2E_TOKEN   a token of its auth_tokens
//   E2E_OUT       folder for screenshots      E2E_CHROMIUM the browser binary
//   E2E_DIGIT     a PNG of an MNIST digit     E2E_LABEL   its true label (the model gets it right)
//   E2E_ONNX      tests/fixtures/lenet5.onnx
// Exit status 0 when every check passes; otherwise 1, each failure on its own "FAIL:" line.
//
// Failed requests, by design: the console loads without a token and must ask for one (the test
// waits for the dialog). It may learn that it needs one from GET /v2 (which says which calls
// need a token) or from an API answer 401 (auth_inference is on, so its model calls are
// refused without one). So a 401 to a request sent WITHOUT an Authorization header BEFORE the
// token was entered is tolerated (as is chromium's console line "Failed to load resource ...
// 401" for that URL); none is required. Any other answer >= 400 (a 401 after the token was
// entered means the console did not send it), any request that fails at the network level, any
// console error and any uncaught page error fails the test.
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const env = (k) => {
    const v = process.env[k];
    if (!v) { console.error(`FAIL: ${k} is not set (run tests/integration/test_console.sh)`); process.exit(2); }
    return v;
};
const URL0 = env('E2E_URL'), TOKEN = env('E2E_TOKEN'), OUT = env('E2E_OUT');
const DIGIT = env('E2E_DIGIT'), LABEL = env('E2E_LABEL'), ONNX = env('E2E_ONNX');
const CHROMIUM = env('E2E_CHROMIUM');

const failures = [];
const fail = (msg) => { failures.push(msg); console.log(`FAIL: ${msg}`); };
const okLine = (msg) => console.log(`ok: ${msg}`);
const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1);

// ---- what the page does, recorded for the end ----
let tokenEntered = false, listening = true;
const expected401 = new Set(); // URLs of the expected 401 answers
const sentAfterToken = new WeakMap(); // request -> whether the token had been entered when it was sent
const badResponses = [], failedRequests = [], consoleErrors = [], pageErrors = [];

function watch(page) {
    page.on('console', (m) => {
        if (listening && m.type() === 'error') consoleErrors.push({ text: m.text(), url: (m.location() || {}).url || '' });
    });
    page.on('pageerror', (e) => { if (listening) pageErrors.push(String(e && e.stack || e)); });
    page.on('requestfailed', (r) => {
        if (listening) failedRequests.push(`${r.method()} ${r.url()}: ${(r.failure() || {}).errorText}`);
    });
    page.on('response', async (resp) => {
        if (!listening || resp.status() < 400) return;
        const req = resp.request();
        let auth;
        try { auth = await req.headerValue('authorization'); } catch { auth = undefined; }
        if (resp.status() === 401 && !auth && !sentAfterToken.get(req)) { expected401.add(resp.url()); return; }
        let body = '';
        try { body = (await resp.text()).slice(0, 200); } catch { /* body gone */ }
        badResponses.push(`${req.method()} ${resp.url()} -> ${resp.status()} ${body}`);
    });
    page.on('request', (r) => { sentAfterToken.set(r, tokenEntered); });
}

async function shot(page, name, fullPage = true) {
    const file = path.join(OUT, `${name}.png`);
    // #status: the console's transient notices ("Token set for this tab."), fixed at the bottom;
    // hidden in the pictures only, where they would cover the page.
    // (set through the CSSOM: the console's CSP refuses injected style sheets)
    const hide = (v) => { const e = document.getElementById('status'); if (e) e.style.visibility = v; };
    await page.evaluate(hide, 'hidden');
    await page.screenshot({ path: file, fullPage });
    await page.evaluate(hide, '');
    okLine(`screenshot ${name}.png (${secs()} s)`);
}

// Every input, select and textarea has an accessible name; every button a name too.
async function checkNames(page, where) {
    const unnamed = await page.evaluate(() => {
        const name = (el) => {
            if ((el.getAttribute('aria-label') || '').trim()) return true;
            const by = el.getAttribute('aria-labelledby');
            if (by && by.split(/\s+/).some((id) => (document.getElementById(id)?.textContent || '').trim())) return true;
            if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
            if ((el.getAttribute('title') || '').trim()) return true;
            if (el.tagName === 'BUTTON' && el.textContent.trim()) return true;
            return false;
        };
        const desc = (el) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${el.name ? '[name=' + el.name + ']' : ''}`;
        return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
            .filter((el) => !name(el)).map(desc);
    });
    if (unnamed.length) fail(`${where}: no accessible name (label or aria-label) on ${unnamed.join(', ')}`);
}

// Go to a page by its nav link (a real link); wait for its h1 and the title "dynd — ...".
async function visit(page, id, hash) {
    await page.click(`a#nav-${id}`);
    await page.waitForFunction((h) => location.hash === h || location.hash.startsWith(h + '/'), hash);
    await page.waitForSelector('h1', { state: 'visible' });
    const title = await page.title();
    if (!/^dynd — ./.test(title)) fail(`#${hash}: document.title is "${title}", want "dynd — <page>"`);
    await checkNames(page, hash);
}

async function main() {
    fs.mkdirSync(OUT, { recursive: true });
    const root = typeof process.getuid === 'function' && process.getuid() === 0;
    const browser = await chromium.launch({
        executablePath: CHROMIUM, headless: true,
        args: root ? ['--no-sandbox'] : [], // chromium's sandbox refuses to run as root
    });
    const context = await browser.newContext({ viewport: { width: 1024, height: 700 } });
    context.setDefaultTimeout(15000);
    const page = await context.newPage();
    watch(page);
    try {
        await run(page);
    } catch (e) {
        fail(`${e && e.message ? e.message.split('\n')[0] : e} (after ${secs()} s)`);
        try { await page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }); } catch { /* closed */ }
        console.log(`  page at failure: ${page.url()}; screenshot failure.png`);
    }
    listening = false;
    await browser.close();

    for (const r of badResponses) fail(`request answered >= 400: ${r}`);
    for (const r of failedRequests) fail(`request failed: ${r}`);
    for (const e of pageErrors) fail(`page error: ${e}`);
    for (const c of consoleErrors) {
        if (/status of 401/.test(c.text) && expected401.has(c.url)) continue;
        fail(`console error: ${c.text}${c.url ? ' (' + c.url + ')' : ''}`);
    }
    console.log(`${failures.length ? 'FAILED' : 'passed'} in ${secs()} s`);
    process.exit(failures.length ? 1 : 0);
}

async function run(page) {
    // ---- token: the console loads without one and asks for it ----
    await page.goto(URL0 + '/');
    await page.waitForSelector('input#token-input', { state: 'visible' });
    await checkNames(page, 'token dialog');
    await page.fill('input#token-input', TOKEN);
    tokenEntered = true;
    await page.click('button#token-save');
    await page.waitForSelector('input#token-input', { state: 'hidden' });
    okLine(`token dialog shown (after ${expected401.size} answer(s) 401 to calls without a token), token entered`);
    const stored = await page.evaluate(() => Object.keys(localStorage).map((k) => localStorage.getItem(k)).join('\n'));
    if (stored.includes(TOKEN)) fail('the token is kept in localStorage (memory or sessionStorage only)');
    const cookies = await page.context().cookies();
    if (cookies.some((c) => c.value.includes(TOKEN))) fail('the token is kept in a cookie');

    // ---- Models ----
    await visit(page, 'models', '#/models');
    await page.waitForFunction(() => /\bmnist\b/.test(document.querySelector('main')?.innerText || document.body.innerText));
    okLine('models page lists mnist');
    await shot(page, 'models');

    // ---- Try it: an MNIST digit, top-1 must be its true label ----
    await visit(page, 'try', '#/try');
    await page.waitForFunction(() => [...document.querySelectorAll('select#try-model option')].some((o) => o.value === 'mnist'));
    await page.selectOption('select#try-model', 'mnist');
    await page.setInputFiles('input#try-file', DIGIT);
    await page.click('button#try-submit');
    await page.waitForSelector('ol#try-results li[data-label]');
    const results = await page.$$eval('ol#try-results li', (lis) => lis.map((li) => [li.dataset.label, Number(li.dataset.score)]));
    if (!results.length || results[0][0] !== LABEL) fail(`Try it: top-1 is ${JSON.stringify(results[0])}, want label ${LABEL}`);
    else okLine(`Try it: top-1 label ${results[0][0]} (score ${results[0][1]}), ${results.length} results`);
    if (!results.every(([, s], i) => s >= 0 && s <= 1 && (i === 0 || s <= results[i - 1][1])))
        fail(`Try it: data-score not in 0..1, highest first: ${JSON.stringify(results)}`);
    await page.waitForFunction(() => { const i = document.querySelector('img#try-input'); return i && i.complete && i.naturalWidth > 0; });
    const nat = await page.$eval('img#try-input', (i) => [i.naturalWidth, i.naturalHeight]);
    okLine(`Try it: preprocessed input shown (${nat[0]}x${nat[1]})`);
    const latency = (await page.textContent('#try-latency') || '').trim();
    if (!/\d/.test(latency)) fail(`Try it: #try-latency shows no number: "${latency}"`);
    await shot(page, 'try');

    // ---- Convert: lenet5.onnx, 50 steps, followed to 100 % and its per-layer chart ----
    await visit(page, 'convert', '#/convert');
    await page.setInputFiles('input#convert-file', ONNX);
    await page.fill('input#convert-output', 'e2e');
    await page.selectOption('select#convert-preprocess', 'mnist');
    await page.fill('input#convert-steps', '50');
    // A conversion is verified on calibration images before it is published; the form's data
    // set field (not part of the written contract: #convert-calib) when the console has one.
    const calib = await page.$('#convert-calib');
    if (calib) {
        const tag = await calib.evaluate((e) => e.tagName);
        if (tag === 'SELECT') await page.selectOption('#convert-calib', 'mnist'); else await page.fill('#convert-calib', 'mnist');
    }
    await shot(page, 'convert');
    await page.click('button#convert-submit');
    await page.waitForFunction(() => /^#\/jobs\/[^/]+$/.test(location.hash));
    const jobId = (await page.evaluate(() => location.hash)).slice('#/jobs/'.length);
    okLine(`conversion submitted: job ${jobId}`);
    await page.waitForFunction(() => (document.querySelector('#job-state')?.textContent || '').trim() !== '');
    await page.waitForFunction(() => ['succeeded', 'failed', 'cancelled', 'interrupted']
        .includes((document.querySelector('#job-state')?.textContent || '').trim()), null, { timeout: 40000 });
    const state = (await page.textContent('#job-state')).trim();
    if (state !== 'succeeded') fail(`conversion job ${jobId} ended "${state}" (phase: ${await page.textContent('#job-phase')})`);
    await page.waitForFunction(() => Number(document.querySelector('progress#job-progress')?.value) === 100);
    okLine(`job page: state ${state}, progress 100`);
    await page.waitForSelector('div#job-layers-chart canvas');
    okLine('job page: per-layer chart drawn');
    for (const sel of ['#job-phase', 'button#job-cancel', 'button#job-resume'])
        if (!(await page.$(sel))) fail(`job page: no ${sel}`);
    await checkNames(page, '#/jobs/<id>');
    await shot(page, 'job');

    // ---- Jobs list: the finished job is there ----
    await visit(page, 'jobs', '#/jobs');
    await page.waitForFunction((id) => (document.querySelector('main') || document.body).innerText.includes(id), jobId);
    okLine('jobs page lists the job');
    await shot(page, 'jobs');

    // ---- Server ----
    // the version GET /v2 reports (asked here from node, outside the page) shows on the page
    const meta = await (await fetch(URL0 + '/v2')).json();
    await visit(page, 'server', '#/server');
    await page.waitForFunction((v) => (document.querySelector('main') || document.body).innerText.includes(v), meta.version);
    okLine(`server page shows version ${meta.version}`);
    // some traffic (classify calls from node, outside the page) during a few metric samples,
    // so that the live charts have something to draw
    const digit = fs.readFileSync(DIGIT);
    const until = Date.now() + 5000;
    while (Date.now() < until) {
        const r = await fetch(URL0 + '/v1/models/mnist/classify', {
            method: 'POST', body: digit, headers: { 'Content-Type': 'image/png', Authorization: `Bearer ${TOKEN}` },
        });
        if (r.status !== 200) { fail(`classify from node answered ${r.status}`); break; }
        await r.arrayBuffer();
        await new Promise((res) => setTimeout(res, 20));
    }
    await shot(page, 'server');

    // ---- keyboard: Tab from the top reaches every nav link ----
    // a click on the page's top-left corner (header padding) puts the sequential focus starting
    // point before the nav, as a user who clicks the page and starts tabbing would
    await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
    await page.mouse.click(2, 2);
    const want = ['nav-models', 'nav-jobs', 'nav-convert', 'nav-try', 'nav-server'];
    const reached = new Set();
    let presses = 0;
    for (let i = 0; i < 30 && reached.size < want.length; i++, presses++) {
        await page.keyboard.press('Tab');
        const id = await page.evaluate(() => document.activeElement && document.activeElement.id);
        if (want.includes(id)) reached.add(id);
    }
    const missed = want.filter((w) => !reached.has(w));
    if (missed.length) fail(`keyboard: Tab did not reach ${missed.join(', ')} in 30 presses`);
    else okLine(`keyboard: Tab reaches every nav link (${presses} presses from the top)`);
    // Enter on a focused link navigates
    await page.focus('a#nav-models');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash === '#/models');
    okLine('keyboard: Enter on a nav link opens its page');

    // ---- phone width: 375 x 740, no sideways scrolling of the page ----
    await page.setViewportSize({ width: 375, height: 740 });
    for (const [id, hash] of [['models', '#/models'], ['try', '#/try'], ['jobs', '#/jobs']]) {
        await visit(page, id, hash);
        await page.waitForTimeout(300);
        const w = await page.evaluate(() => document.documentElement.scrollWidth);
        if (w > 375 + 1) fail(`phone width: ${hash} is ${w} px wide at a 375 px viewport (sideways scrolling)`);
        await shot(page, `phone-${id}`, false);
    }
}

main().catch((e) => { console.log(`FAIL: ${e && e.stack || e}`); process.exit(1); });
