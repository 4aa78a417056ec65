'use strict';
// console_firefox.js — drives dynd's web console in headless Firefox (Debian's firefox-esr) through
// puppeteer-core over WebDriver BiDi (nothing is downloaded). Run by
// tests/integration/test_console_firefox.sh, which starts dynd with auth on and passes, in the
// environment:
//   E2E_URL      base URL of dynd              E2E_TOKEN  a token of its auth_tokens
//   E2E_DIGIT    a PNG of an MNIST digit       E2E_LABEL  its true label (the model gets it right)
//   E2E_FIREFOX  the browser binary            E2E_OUT    folder for a screenshot on failure
// Exit status 0 when every check passes; otherwise 1, each failure on its own "FAIL:" line.
//
// The same rules as console_e2e.js (the chromium test): the console loads without a token and
// must ask for one, so a 401 to a request sent WITHOUT an Authorization header BEFORE the token
// was entered is tolerated (and a console line about that 401 for that URL); none is required.
// Any other answer >= 400, any request that fails at the network level, any console error and
// any uncaught page error fails the test. Shorter than the chromium test: token, every page,
// Try it (the Convert flow, phone width and keyboard checks run in chromium only).
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const env = (k) => {
    const v = process.env[k];
    if (!v) { console.error(`FAIL: ${k} is not set (run tests/integration/test_console_firefox.sh)`); process.exit(2); }
    return v;
};
const URL0 = env('E2E_URL'), TOKEN = env('E2E_TOKEN'), OUT = env('E2E_OUT');
const DIGIT = env('E2E_DIGIT'), LABEL = env('E2E_LABEL'), FIREFOX = env('E2E_FIREFOX');

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
    page.on('request', (r) => { sentAfterToken.set(r, tokenEntered); });
    page.on('response', async (resp) => {
        if (!listening || resp.status() < 400) return;
        const req = resp.request();
        const h = req.headers() || {};
        const auth = Object.keys(h).some((k) => k.toLowerCase() === 'authorization');
        if (resp.status() === 401 && !auth && !sentAfterToken.get(req)) { expected401.add(resp.url()); return; }
        let body = '';
        try { body = (await resp.text()).slice(0, 200); } catch { /* body not kept */ }
        badResponses.push(`${req.method()} ${resp.url()} -> ${resp.status()} ${body}`);
    });
}

// Go to a page by its nav link (a real link); wait for its hash, its h1 and the title "dynd — ...".
async function visit(page, id, hash) {
    await page.click(`a#nav-${id}`);
    await page.waitForFunction((h) => location.hash === h || location.hash.startsWith(h + '/'), {}, hash);
    await page.waitForSelector('h1', { visible: true });
    const title = await page.title();
    if (!/^dynd — ./.test(title)) fail(`${hash}: document.title is "${title}", want "dynd — <page>"`);
    else okLine(`${hash}: "${title}" (${secs()} s)`);
}

async function main() {
    fs.mkdirSync(OUT, { recursive: true });
    const browser = await puppeteer.launch({
        browser: 'firefox', executablePath: FIREFOX, headless: true,
        defaultViewport: { width: 1024, height: 700 },
    });
    okLine(`browser ${await browser.version()} started (${secs()} s)`);
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    watch(page);
    try {
        await run(page);
    } catch (e) {
        fail(`${e && e.message ? e.message.split('\n')[0] : e} (after ${secs()} s)`);
        try { await page.screenshot({ path: path.join(OUT, 'failure-firefox.png'), fullPage: true }); } catch { /* closed */ }
        console.log(`  page at failure: ${page.url()}; screenshot failure-firefox.png`);
    }
    // let late events (a console line after the last answer) arrive before the books close
    await new Promise((res) => setTimeout(res, 500));
    listening = false;
    await browser.close();

    for (const r of badResponses) fail(`request answered >= 400: ${r}`);
    for (const r of failedRequests) fail(`request failed: ${r}`);
    for (const e of pageErrors) fail(`page error: ${e}`);
    for (const c of consoleErrors) {
        if (/\b401\b/.test(c.text) && expected401.has(c.url)) continue;
        fail(`console error: ${c.text}${c.url ? ' (' + c.url + ')' : ''}`);
    }
    console.log(`${failures.length ? 'FAILED' : 'passed'} in ${secs()} s`);
    process.exit(failures.length ? 1 : 0);
}

async function run(page) {
    // ---- token: the console loads without one and asks for it ----
    await page.goto(URL0 + '/');
    await page.waitForSelector('input#token-input', { visible: true });
    await page.type('input#token-input', TOKEN);
    tokenEntered = true;
    await page.click('button#token-save');
    await page.waitForSelector('input#token-input', { hidden: true });
    okLine(`token dialog shown (after ${expected401.size} answer(s) 401 to calls without a token), token entered`);

    // ---- every page ----
    await visit(page, 'models', '#/models');
    await page.waitForFunction(() => /\bmnist\b/.test((document.querySelector('main') || document.body).innerText));
    okLine('models page lists mnist');
    await visit(page, 'jobs', '#/jobs');
    await visit(page, 'convert', '#/convert');
    await page.waitForSelector('input#convert-file');
    await visit(page, 'server', '#/server');
    const meta = await (await fetch(URL0 + '/v2')).json();
    await page.waitForFunction((v) => (document.querySelector('main') || document.body).innerText.includes(v), {}, meta.version);
    okLine(`server page shows version ${meta.version}`);

    // ---- Try it: an MNIST digit, top-1 must be its true label ----
    await visit(page, 'try', '#/try');
    await page.waitForFunction(() => [...document.querySelectorAll('select#try-model option')].some((o) => o.value === 'mnist'));
    await page.select('select#try-model', 'mnist');
    const file = await page.waitForSelector('input#try-file');
    await file.uploadFile(DIGIT);
    await page.click('button#try-submit');
    await page.waitForSelector('ol#try-results li[data-label]');
    const results = await page.$$eval('ol#try-results li', (lis) => lis.map((li) => [li.dataset.label, Number(li.dataset.score)]));
    if (!results.length || results[0][0] !== LABEL) fail(`Try it: top-1 is ${JSON.stringify(results[0])}, want label ${LABEL}`);
    else okLine(`Try it: top-1 label ${results[0][0]} (score ${results[0][1]}), ${results.length} results`);
    await page.waitForFunction(() => { const i = document.querySelector('img#try-input'); return i && i.complete && i.naturalWidth > 0; });
    const nat = await page.$eval('img#try-input', (i) => [i.naturalWidth, i.naturalHeight]);
    okLine(`Try it: preprocessed input shown (${nat[0]}x${nat[1]})`);
    await page.screenshot({ path: path.join(OUT, 'try-firefox.png') });
}

main().catch((e) => { console.log(`FAIL: ${e && e.stack || e}`); process.exit(1); });
