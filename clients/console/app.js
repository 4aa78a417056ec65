// app.js — dynd's web console: hash-routed pages over the daemon's own API (no framework, no
// build step; uPlot, embedded next to this file, draws the charts). Served by dynd at / and
// /console/app.js (api/console.c) under a Content-Security-Policy that allows this origin only:
// no inline script, no inline style attribute, no other host.
//
// Pages: #/models, #/jobs, #/jobs/<id>, #/convert, #/try, #/server. API calls carry
// "Authorization: Bearer <token>" once the user typed one in; a 401 / 403 opens the token
// dialog. The token lives in this tab's memory and sessionStorage only (never localStorage
// or a cookie), so it is gone when the tab closes.

const uPlot = window.uPlot;
const TOKEN_KEY = 'dynd.token';

// ---- small DOM helpers --------------------------------------------------------------------

// h('tag', {attr: value, onclick: fn}, child...) — children are nodes or text (never HTML).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function dl(rows) {
  const d = h('dl');
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === '') continue;
    d.append(h('dt', {}, k), h('dd', {}, v));
  }
  return d;
}

const fmtInt = (n) => (n === undefined || n === null ? '' : Number(n).toLocaleString('en-US'));
const fmtPct = (x, digits = 1) => (typeof x === 'number' ? `${(x * 100).toFixed(digits)} %` : '');
const fmtNum = (x, digits = 3) => (typeof x === 'number' ? Number(x.toPrecision(digits)).toString() : '');
function fmtSecs(s) {
  if (typeof s !== 'number') return '';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtWhen(t) {
  if (!t) return '';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

let statusTimer = 0;
function say(msg) {
  const s = document.getElementById('status');
  s.textContent = msg;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { s.textContent = ''; }, 4000);
}

// ---- the API, with the token -------------------------------------------------------------

let token = sessionStorage.getItem(TOKEN_KEY) || '';

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// api(method, path, {body, type, text}) -> the parsed JSON reply (or the text with text: true).
// Throws ApiError with the server's message on a 4xx / 5xx; 401 / 403 also open the token dialog.
async function api(method, path, opts = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (opts.type) headers['Content-Type'] = opts.type;
  let res;
  try {
    res = await fetch(path, { method, headers, body: opts.body, signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `dynd did not answer (${e.message})`);
  }
  const text = await res.text();
  if (res.ok) {
    if (opts.text) return text;
    return text ? JSON.parse(text) : null;
  }
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  const msg = (body && body.error) || `${res.status} ${res.statusText}`;
  const code = (body && body.code) || String(res.status);
  if ((res.status === 401 || res.status === 403) && code !== 'writes_need_auth') {
    askToken(res.status === 401 ? 'This dynd needs a bearer token for this page.'
      : 'The token was refused; enter a valid one.');
  }
  throw new ApiError(res.status, code, msg);
}

// GET /v2 once (no token needed): its "auth" says which calls need a token, so a page asks
// for it before its first call rather than after a refusal.
let serverMeta = null;
function serverInfo() {
  if (!serverMeta) serverMeta = api('GET', '/v2').catch((e) => { serverMeta = null; throw e; });
  return serverMeta;
}

// Whether the page may call endpoints of `kind` ("admin" or "inference") now; if a token is
// needed and none was given, says so on the page, opens the token dialog and returns false
// (saving a token renders the page again).
async function needToken(kind, main) {
  const auth = (await serverInfo()).auth || {};
  if (token || !auth[kind]) return true;
  main.append(h('p', { class: 'error', role: 'alert' }, 'This page needs the API token (auth_tokens). ',
    h('button', { type: 'button', onclick: () => askToken('Enter the API token.') }, 'Enter token')));
  askToken('This dynd needs a bearer token for this page.');
  return false;
}

function askToken(why) {
  const dlg = document.getElementById('token-dialog');
  document.getElementById('token-why').textContent = why;
  const input = document.getElementById('token-input');
  input.value = token;
  if (!dlg.open) dlg.showModal();
  input.focus();
}

function setupTokenDialog() {
  const dlg = document.getElementById('token-dialog');
  document.getElementById('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = document.getElementById('token-input').value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    dlg.close();
    say(token ? 'Token set for this tab.' : 'Token cleared.');
    route(); // the page again, with the token
  });
  document.getElementById('token-cancel').addEventListener('click', () => dlg.close());
  document.getElementById('token-open').addEventListener('click',
    () => askToken('API calls from this tab will send this token.'));
}

// ---- pages, routing, timers --------------------------------------------------------------

// A page's lifetime: its timers and charts end when the user goes elsewhere.
class Page {
  constructor() {
    this.alive = true;
    this.timers = new Set();
    this.charts = new Set();
  }
  // fn runs after ms, then again ms after each run ends, while the page lives and fn
  // returns something other than false.
  every(ms, fn) {
    const tick = async () => {
      if (!this.alive) return;
      let again = true;
      try { again = (await fn()) !== false; } catch (e) { showError(e); again = !(e instanceof ApiError && e.status >= 400 && e.status < 500); }
      if (again && this.alive) this.timers.add(setTimeout(tick, ms));
    };
    this.timers.add(setTimeout(tick, ms));
  }
  chart(opts, data, el) {
    const c = new uPlot({ ...opts, width: chartWidth(el), height: opts.height || 220 }, data, el);
    this.charts.add(c);
    return c;
  }
  stop() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
    for (const c of this.charts) c.destroy();
    this.charts.clear();
  }
}

function chartWidth(el) {
  return Math.max(260, Math.min(900, (el.clientWidth || el.parentElement.clientWidth || 320) - 4));
}

function showError(e) {
  if (e && e.name === 'AbortError') return;
  const main = document.getElementById('app');
  let box = main.querySelector('.page-error');
  if (!box) {
    box = h('p', { class: 'error page-error', role: 'alert' });
    const h1 = main.querySelector('h1');
    if (h1) h1.after(box); else main.prepend(box);
  }
  box.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e && e.message || e);
}

const ROUTES = [
  [/^#\/models$/, 'Models', 'nav-models', pageModels],
  [/^#\/jobs$/, 'Jobs', 'nav-jobs', pageJobs],
  [/^#\/jobs\/([A-Za-z0-9._-]+)$/, 'Job', 'nav-jobs', pageJob],
  [/^#\/convert$/, 'Convert', 'nav-convert', pageConvert],
  [/^#\/try(?:\?.*)?$/, 'Try it', 'nav-try', pageTry],
  [/^#\/server$/, 'Server', 'nav-server', pageServer],
];

let current = null;
let firstRoute = true;

function route() {
  const hash = location.hash || '';
  let hit = null;
  let m = null;
  for (const r of ROUTES) {
    m = hash.match(r[0]);
    if (m) { hit = r; break; }
  }
  if (!hit) {
    location.replace('#/models');
    return;
  }
  if (current) current.stop();
  current = new Page();
  const [, title, navId, render] = hit;
  document.title = `dynd — ${title}`;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.id === navId) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('app');
  main.replaceChildren();
  if (!firstRoute) main.focus();
  firstRoute = false;
  const page = current;
  Promise.resolve(render(page, main, ...m.slice(1))).catch((e) => { if (page.alive) showError(e); });
}

// ---- Models ------------------------------------------------------------------------------

async function pageModels(page, main) {
  main.append(h('h1', {}, 'Models'),
    h('p', { class: 'hint' }, 'The model repository: every model dynd serves or has a file for.'));
  if (!(await needToken('inference', main))) return;
  const list = h('div', { class: 'cards' });
  main.append(list);
  const data = await api('GET', '/v1/models');
  if (!page.alive) return;
  const models = data.models || [];
  if (!models.length) list.append(h('p', {}, 'No models in the repository.'));
  // metadata (labels, preprocessing, conversion results) of the loaded ones; asking for a model
  // that is not loaded would load it, so those are left alone
  const metas = await Promise.all(models.map((m) => (m.ready
    ? api('GET', `/v2/models/${encodeURIComponent(m.name)}`).catch(() => null) : null)));
  if (!page.alive) return;
  models.forEach((m, i) => list.append(modelCard(page, m, metas[i])));
}

function modelCard(page, m, meta) {
  const params = (meta && meta.parameters) || {};
  const info = params.info || {};
  const conv = info.convert || {};
  const fid = conv.fidelity || {};
  const labels = params.labels || [];
  const pp = params.preprocess;
  const state = m.ready ? 'ready' : 'unavailable';
  const rows = [
    ['State', h('span', { class: `state ${state}` }, m.ready ? 'loaded' : 'not loaded')],
    ['Why', m.ready ? null : m.reason],
    ['Form', m.form === 'dyn' ? 'DyN' : m.form === 'dense' ? 'dense' : m.form],
    ['Versions', (m.versions || []).join(', ')],
    ['Device', m.device],
    ['Input', m.input_shape],
    ['Classes', m.classes],
    ['Stored floats', fmtInt(m.stored_floats)],
    ['Memory floats', fmtInt(m.memory_floats)],
    ['MACs / sample', fmtInt(m.macs)],
    ['Entropy', m.form === 'dyn' && typeof m.entropy_bits === 'number' ? `${m.entropy_bits.toFixed(2)} bits` : null],
    ['Loaded', m.loaded_at ? `${fmtWhen(m.loaded_at)} (in ${fmtSecs(m.load_seconds)})` : null],
    ['Preprocessing', pp ? describePP(pp) : (m.ready && m.image_input ? '0..1 scaling' : null)],
    ['Labels', labels.length ? (labels.length > 12 ? `${labels.slice(0, 12).join(', ')}, … (${labels.length})` : labels.join(', ')) : null],
    ['Agreement', typeof fid.agree_top1 === 'number' ? `${fmtPct(fid.agree_top1)} top-1 with the original (${fid.images} ${fid.on} images${fid.verified === false ? ', unverified' : ''})` : null],
    ['Accuracy', typeof fid.acc_after === 'number' ? `${fmtPct(fid.acc_after)} (original ${fmtPct(fid.acc_before)})` : (typeof info.test_acc === 'number' ? `${fmtPct(info.test_acc, 2)} (test set)` : null)],
    ['Compression', typeof conv.compression === 'number' ? `${conv.compression.toFixed(2)}×` : null],
    ['Source', info.source ? `${info.source}${info.producer ? ` (${info.producer})` : ''}` : (info.arch ? `${info.arch}, trained on ${info.trained_on}` : null)],
  ];
  const act = async (what) => {
    if (!token && ((await serverInfo()).auth || {}).admin) { askToken('Loading and unloading models needs the API token.'); return; }
    try {
      await api('POST', `/v2/repository/models/${encodeURIComponent(m.name)}/${what}`);
      say(`${m.name}: ${what}ed`);
      if (page.alive) route();
    } catch (e) { showError(e); }
  };
  return h('section', { class: 'card', 'aria-label': `model ${m.name}` },
    h('h2', {}, m.name),
    dl(rows),
    h('div', { class: 'row' },
      h('button', { type: 'button', onclick: () => act('load') }, m.ready ? 'Reload' : 'Load'),
      m.ready ? h('button', { type: 'button', class: 'secondary', onclick: () => act('unload') }, 'Unload') : null,
      m.ready && m.image_input ? h('a', { href: `#/try?model=${encodeURIComponent(m.name)}` }, 'Try it') : null));
}

function describePP(pp) {
  const parts = [];
  if (pp.color) parts.push(pp.color);
  else if (pp.channels) parts.push(pp.channels === 1 ? 'gray' : 'rgb');
  if (pp.width && pp.height) parts.push(`${pp.width}×${pp.height}`);
  for (const s of pp.steps || []) parts.push(Object.entries(s).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(' '));
  if (pp.mean) parts.push(`mean ${pp.mean.map((x) => fmtNum(x)).join('/')}`);
  if (pp.std) parts.push(`std ${pp.std.map((x) => fmtNum(x)).join('/')}`);
  if (pp.scale !== undefined && pp.scale !== 255) parts.push(`scale ${pp.scale}`);
  if (pp.layout) parts.push(pp.layout);
  return parts.join(', ');
}

// ---- Jobs --------------------------------------------------------------------------------

const ACTIVE = new Set(['queued', 'running']);

async function pageJobs(page, main) {
  main.append(h('h1', {}, 'Jobs'),
    h('p', {}, h('a', { href: '#/convert' }, 'Start a conversion')));
  if (!(await needToken('admin', main))) return;
  const wrap = h('div', { class: 'scroll' });
  const counts = h('p', { class: 'hint' });
  main.append(counts, wrap);
  const draw = async () => {
    const data = await api('GET', '/v1/jobs');
    if (!page.alive) return false;
    const jobs = data.jobs || [];
    counts.textContent = Object.entries(data.counts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(', ') || 'No jobs yet.';
    if (!jobs.length) { wrap.replaceChildren(); return true; }
    const rows = jobs.map((j) => h('tr', {},
      h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.id)),
      h('td', {}, j.kind),
      h('td', {}, h('span', { class: `state ${j.state}` }, j.state)),
      h('td', {}, h('progress', { max: 100, value: Math.round((j.progress || 0) * 100), 'aria-label': `progress of ${j.id}` }),
        ` ${Math.round((j.progress || 0) * 100)} %`),
      h('td', {}, j.phase || ''),
      h('td', {}, typeof j.eta_s === 'number' ? fmtSecs(j.eta_s) : ''),
      h('td', {}, j.model || j.output || ''),
      h('td', {}, fmtWhen(j.created_at))));
    wrap.replaceChildren(h('table', { class: 'stack' },
      h('thead', {}, h('tr', {}, ['Job', 'Kind', 'State', 'Progress', 'Phase', 'ETA', 'Model', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
    return true;
  };
  await draw();
  page.every(2000, draw);
}

async function pageJob(page, main, id) {
  const state = h('span', { id: 'job-state', class: 'state' });
  const prog = h('progress', { id: 'job-progress', max: 100, value: 0, 'aria-label': 'job progress' });
  const progText = h('span');
  const phase = h('span', { id: 'job-phase' });
  const facts = h('div');
  const err = h('p', { class: 'error', role: 'alert' });
  const cancel = h('button', { type: 'button', id: 'job-cancel', class: 'secondary' }, 'Cancel');
  const resume = h('button', { type: 'button', id: 'job-resume' }, 'Resume');
  const result = h('div');
  const history = h('section', { hidden: true }, h('h2', {}, 'Training history'),
    h('p', { class: 'hint' }, 'Loss and accuracy per epoch.'),
    h('div', { id: 'job-history-chart', class: 'chart' }));
  const layers = h('section', { hidden: true }, h('h2', {}, 'Per-layer report'),
    h('p', { class: 'hint' }, 'Relative error of each layer\'s DyN fit beside the truncated-SVD error at the same number of floats (lower is better), then the floats stored before and after.'),
    h('div', { id: 'job-layers-chart', class: 'chart' }),
    h('div', { id: 'job-floats-chart', class: 'chart' }),
    h('div', { class: 'scroll', id: 'job-layers-table' }));
  main.append(h('h1', {}, `Job ${id}`),
    h('p', {}, 'State: ', state, ' · phase: ', phase),
    h('p', {}, prog, progText),
    facts, err, h('div', { class: 'row' }, cancel, resume), result, layers, history);

  if (!(await needToken('admin', main))) return;
  let job = null;
  const charts = {};
  const draw = async () => {
    job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    if (!page.alive) return false;
    const pct = Math.round((job.progress || 0) * 100);
    state.textContent = job.state;
    state.className = `state ${job.state}`;
    prog.value = pct;
    progText.textContent = ` ${pct} %`;
    phase.textContent = job.phase || '';
    const active = ACTIVE.has(job.state);
    cancel.disabled = !active;
    resume.disabled = active || !job.resumable;
    const L = job.layer || {};
    facts.replaceChildren(dl([
      ['Kind', job.kind],
      ['Model', job.model || job.output || (job.options && job.options.model)],
      ['ETA', active && typeof job.eta_s === 'number' ? fmtSecs(job.eta_s) : null],
      ['Layer', active && L.count ? `${L.index} of ${L.count}${L.name ? ` (${L.name})` : ''}` : null],
      ['Created', fmtWhen(job.created_at)],
      ['Finished', fmtWhen(job.finished_at)],
    ]));
    err.textContent = job.error ? `${job.error}${job.error_code ? ` (${job.error_code})` : ''}` : '';
    drawResult(result, job);
    if (Array.isArray(job.layers) && job.layers.length) drawLayers(page, layers, charts, job.layers);
    if (Array.isArray(job.history) && job.history.length) drawHistory(page, history, charts, job.history);
    return active; // polling ends with the job
  };
  cancel.addEventListener('click', async () => {
    try { await api('DELETE', `/v1/jobs/${encodeURIComponent(id)}`); say('Cancel requested.'); await draw(); } catch (e) { showError(e); }
  });
  resume.addEventListener('click', async () => {
    try {
      await api('POST', `/v1/jobs/${encodeURIComponent(id)}/resume`);
      say('Resumed.');
      if (page.alive) route();
    } catch (e) { showError(e); }
  });
  if (await draw()) page.every(1000, draw);
}

function drawResult(box, job) {
  const r = job.result;
  if (!r) { box.replaceChildren(); return; }
  const f = r.fidelity || {};
  box.replaceChildren(h('h2', {}, 'Result'), dl([
    ['Agreement with the original', typeof f.agree_top1 === 'number' ? `${fmtPct(f.agree_top1)} top-1, ${fmtPct(f.agree_top5)} top-5 (${f.images} ${f.on} images)` : null],
    ['Accuracy', typeof f.acc_after === 'number' ? `${fmtPct(f.acc_after)} (original ${fmtPct(f.acc_before)})` : (typeof r.acc_after === 'number' ? `${fmtPct(r.acc_after)} (original ${fmtPct(r.acc_before)})` : null)],
    ['Best validation accuracy', typeof r.best_val_acc === 'number' ? `${fmtPct(r.best_val_acc, 2)} (epoch ${r.best_epoch})` : null],
    ['Floats', r.floats_before ? `${fmtInt(r.floats_before)} → ${fmtInt(r.floats_after)}` : null],
    ['Compression', typeof r.compression === 'number' ? `${r.compression.toFixed(2)}×` : null],
    ['Bytes', r.bytes_before ? `${fmtInt(r.bytes_before)} → ${fmtInt(r.bytes_stored)}` : null],
    ['Layers converted', r.layers_converted],
    ['Output logits error', typeof r.logit_rel_err === 'number' ? fmtNum(r.logit_rel_err) : null],
    ['Took', fmtSecs(r.seconds)],
  ]));
}

const COLORS = ['#1f5fbf', '#c0392b', '#1b7f3b', '#9a6700'];

function drawLayers(page, section, charts, layers) {
  section.hidden = false;
  const xs = layers.map((_, i) => i);
  const num = (v) => (typeof v === 'number' ? v : null);
  const errData = [xs, layers.map((l) => (l.converted ? num(l.rel_err) : null)), layers.map((l) => (l.converted ? num(l.svd_rel_err) : null))];
  const floatData = [xs, layers.map((l) => num(l.floats_before)), layers.map((l) => num(l.floats_after))];
  const xAxis = { label: 'layer', values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? `L${v}` : '')) };
  if (!charts.err) {
    charts.err = page.chart({
      title: 'Weight error per layer',
      scales: { x: { time: false, range: (u, lo, hi) => [lo - 0.5, hi + 0.5] } },
      axes: [xAxis, { label: 'relative error' }],
      series: [{ label: 'layer' },
        { label: 'DyN', stroke: COLORS[0], width: 2, points: { show: true, size: 7 } },
        { label: 'truncated SVD, same floats', stroke: COLORS[1], width: 2, dash: [6, 4], points: { show: true, size: 7 } }],
    }, errData, document.getElementById('job-layers-chart'));
    const bars = uPlot.paths && uPlot.paths.bars;
    charts.floats = page.chart({
      title: 'Stored floats per layer',
      scales: { x: { time: false, range: (u, lo, hi) => [lo - 0.5, hi + 0.5] } },
      axes: [xAxis, { label: 'floats', size: 60 }],
      series: [{ label: 'layer' },
        { label: 'before', stroke: COLORS[2], fill: 'rgba(27,127,59,.35)', paths: bars ? bars({ size: [0.35], align: -1 }) : undefined },
        { label: 'after', stroke: COLORS[0], fill: 'rgba(31,95,191,.45)', paths: bars ? bars({ size: [0.35], align: 1 }) : undefined }],
    }, floatData, document.getElementById('job-floats-chart'));
  } else {
    charts.err.setData(errData);
    charts.floats.setData(floatData);
  }
  const rows = layers.map((l, i) => h('tr', {},
    h('td', {}, `L${i}`), h('td', {}, l.name), h('td', {}, l.converted ? `${l.op_before} → ${l.op_after}` : 'kept'),
    h('td', {}, fmtInt(l.floats_before)), h('td', {}, fmtInt(l.floats_after)),
    h('td', {}, l.converted ? fmtNum(l.rel_err) : ''), h('td', {}, l.converted ? fmtNum(l.svd_rel_err) : ''),
    h('td', {}, l.converted ? fmtNum(l.holdout_out_rel_err ?? l.out_rel_err) : (l.reason || ''))));
  document.getElementById('job-layers-table').replaceChildren(h('table', {},
    h('caption', { class: 'hint' }, 'Per-layer report'),
    h('thead', {}, h('tr', {}, ['', 'Layer', 'Op', 'Floats before', 'after', 'DyN error', 'SVD error', 'Output error / note'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function drawHistory(page, section, charts, hist) {
  section.hidden = false;
  const num = (v) => (typeof v === 'number' ? v : null);
  const data = [hist.map((e) => e.epoch), hist.map((e) => num(e.train_loss)), hist.map((e) => num(e.train_acc)), hist.map((e) => num(e.val_acc))];
  if (charts.hist) { charts.hist.setData(data); return; }
  charts.hist = page.chart({
    title: 'Loss and accuracy per epoch',
    scales: { x: { time: false }, loss: { auto: true }, acc: { range: [0, 1] } },
    axes: [{ label: 'epoch', values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? v : '')) },
      { scale: 'loss', label: 'loss' },
      { scale: 'acc', label: 'accuracy', side: 1, grid: { show: false } }],
    series: [{ label: 'epoch' },
      { label: 'train loss', scale: 'loss', stroke: COLORS[1], width: 2, points: { show: true } },
      { label: 'train acc', scale: 'acc', stroke: COLORS[0], width: 2, points: { show: true } },
      { label: 'val acc', scale: 'acc', stroke: COLORS[2], width: 2, points: { show: true } }],
  }, data, document.getElementById('job-history-chart'));
}

// ---- Convert -----------------------------------------------------------------------------

function field(id, label, input, hint) {
  return h('div', {}, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

async function pageConvert(page, main) {
  const file = h('input', { id: 'convert-file', type: 'file', accept: '.onnx,application/octet-stream', required: true, 'aria-describedby': 'convert-file-hint' });
  const output = h('input', { id: 'convert-output', type: 'text', pattern: '[A-Za-z0-9][A-Za-z0-9._-]*', placeholder: 'e.g. lenet_dyn', autocomplete: 'off' });
  const pp = h('select', { id: 'convert-preprocess' },
    h('option', { value: 'mnist' }, 'MNIST (gray 28×28, its normalization and labels)'),
    h('option', { value: 'fashion' }, 'Fashion-MNIST (gray 28×28, its normalization and labels)'),
    h('option', { value: 'none' }, 'none (0..1 scaling of the model\'s input)'),
    h('option', { value: 'custom' }, 'explicit (the fields below)'));
  const ppColor = h('select', { id: 'convert-pp-color' },
    h('option', { value: 'gray' }, 'gray'), h('option', { value: 'rgb' }, 'RGB'), h('option', { value: 'bgr' }, 'BGR'));
  const ppMean = h('input', { id: 'convert-pp-mean', type: 'text', placeholder: 'e.g. 0.485, 0.456, 0.406', autocomplete: 'off' });
  const ppStd = h('input', { id: 'convert-pp-std', type: 'text', placeholder: 'e.g. 0.229, 0.224, 0.225', autocomplete: 'off' });
  const ppScale = h('input', { id: 'convert-pp-scale', type: 'number', step: 'any', min: 0, placeholder: '255' });
  const ppFields = h('fieldset', { hidden: true }, h('legend', {}, 'Explicit preprocessing'),
    field('convert-pp-color', 'Colour', ppColor),
    field('convert-pp-mean', 'Mean per channel', ppMean, 'After dividing the 8-bit pixels by the scale; one number or one per channel.'),
    field('convert-pp-std', 'Standard deviation per channel', ppStd),
    field('convert-pp-scale', 'Scale', ppScale));
  pp.addEventListener('change', () => { ppFields.hidden = pp.value !== 'custom'; });
  const numList = (text, what) => {
    if (!text.trim()) return undefined;
    const v = text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (v.some((x) => !Number.isFinite(x))) throw new Error(`${what}: give numbers separated by commas`);
    return v;
  };
  const budget = h('select', { id: 'convert-budget' },
    h('option', { value: 'ratio' }, 'compression ratio'),
    h('option', { value: 'target_agreement' }, 'target agreement with the original'));
  const amount = h('input', { id: 'convert-amount', type: 'number', min: 0, step: 'any', placeholder: '4 (ratio) or 0.99 (agreement)' });
  const steps = h('input', { id: 'convert-steps', type: 'number', min: 1, step: 1, placeholder: 'default' });
  const calib = h('input', { id: 'convert-calib', type: 'text', placeholder: 'e.g. mnist', autocomplete: 'off' });
  const zip = h('input', { id: 'convert-calib-zip', type: 'file', accept: '.zip,.tar,.tar.gz,.tgz,application/zip' });
  const submit = h('button', { type: 'submit', id: 'convert-submit' }, 'Start conversion');
  const msg = h('p', { role: 'status' });
  const form = h('form', { novalidate: true },
    field('convert-file', 'ONNX model', file, 'Sent as it is read from disk (streamed), not loaded into the page.'),
    field('convert-output', 'Output model name', output, 'The name the converted model is served under (default: the job id).'),
    field('convert-preprocess', 'Preprocessing', pp), ppFields,
    h('fieldset', {}, h('legend', {}, 'Budget'),
      field('convert-budget', 'Aim for', budget),
      field('convert-amount', 'Value (empty: the default ratio 4)', amount)),
    field('convert-steps', 'Fit steps per layer', steps),
    h('fieldset', {}, h('legend', {}, 'Calibration images (optional)'),
      field('convert-calib', 'Data set name', calib, 'A built-in set (mnist, fashion) or one uploaded to this dynd.'),
      field('convert-calib-zip', 'Upload images as an archive', zip, 'A zip (or tar) of images, one folder per class; stored under the data set name above.')),
    h('div', { class: 'row' }, submit), msg);
  main.append(h('h1', {}, 'Convert'),
    h('p', { class: 'hint' }, 'Convert an ONNX model to DyN; the job page follows it live.'));
  const auth = (await serverInfo()).auth || {};
  if (auth.writes === false) {
    main.append(h('p', { class: 'error', role: 'alert' }, 'This dynd has no auth_tokens, so it refuses jobs (set auth_tokens, or allow_unauthenticated_writes on a private machine).'));
  }
  main.append(form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!token && ((await serverInfo()).auth || {}).admin) { askToken('Starting a job needs the API token.'); return; }
    const f = file.files[0];
    if (!f) { msg.textContent = 'Choose an ONNX file first.'; msg.className = 'error'; file.focus(); return; }
    const q = new URLSearchParams();
    if (output.value.trim()) q.set('output', output.value.trim());
    if (amount.value.trim()) q.set(budget.value, amount.value.trim());
    if (steps.value.trim()) q.set('steps', steps.value.trim());
    const setName = calib.value.trim();
    submit.disabled = true;
    msg.className = '';
    try {
      if (pp.value === 'custom') {
        const spec = { color: ppColor.value };
        const mean = numList(ppMean.value, 'Mean');
        const std = numList(ppStd.value, 'Standard deviation');
        if (mean) spec.mean = mean;
        if (std) spec.std = std;
        if (ppScale.value.trim()) spec.scale = Number(ppScale.value);
        q.set('preprocess', JSON.stringify(spec));
      } else if (pp.value !== 'none') q.set('preprocess_from', pp.value);
      if (zip.files[0]) {
        if (!setName) throw new Error('Give the data set a name to upload the archive under.');
        msg.textContent = `Uploading ${zip.files[0].name}…`;
        await api('PUT', `/v1/datasets/${encodeURIComponent(setName)}`, { body: zip.files[0], type: 'application/octet-stream' });
      }
      if (setName) q.set('calib', setName);
      msg.textContent = `Uploading ${f.name} (${fmtInt(f.size)} bytes)…`;
      const job = await api('POST', `/v1/conversions?${q}`, { body: f, type: 'application/octet-stream' });
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      msg.className = 'error';
      msg.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : e.message;
    } finally {
      submit.disabled = false;
    }
  });
}

// ---- Try it ------------------------------------------------------------------------------

async function pageTry(page, main) {
  const select = h('select', { id: 'try-model' });
  const file = h('input', { id: 'try-file', type: 'file', accept: 'image/*' });
  const preview = h('img', { id: 'try-preview', alt: 'the picked image', hidden: true });
  const submit = h('button', { type: 'submit', id: 'try-submit' }, 'Classify');
  const results = h('ol', { id: 'try-results', 'aria-label': 'predictions, best first' });
  const latency = h('p', { id: 'try-latency' });
  const input = h('img', { id: 'try-input', alt: 'the input the model saw, after preprocessing', hidden: true });
  const msg = h('p', { role: 'status' });
  const drop = h('div', { class: 'drop' },
    h('label', { for: 'try-file' }, 'Image (PNG or JPEG) — pick one or drop it here'), file);
  const form = h('form', {},
    h('label', { for: 'try-model' }, 'Model'), select, drop,
    h('div', { class: 'row' }, submit), msg);
  main.append(h('h1', {}, 'Try it'), form,
    h('section', { 'aria-label': 'result' },
      h('h2', {}, 'Predictions'), results, latency,
      h('div', { class: 'images' },
        h('figure', {}, preview, h('figcaption', {}, 'Sent')),
        h('figure', {}, input, h('figcaption', {}, 'What the model saw')))));

  let picked = null;
  let previewUrl = '';
  const pick = (f) => {
    picked = f || null;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = picked ? URL.createObjectURL(picked) : '';
    preview.hidden = !picked;
    if (picked) preview.src = previewUrl;
  };
  file.addEventListener('change', () => pick(file.files[0]));
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    const f = ev.dataTransfer.files[0];
    if (f) pick(f);
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!select.value) { msg.textContent = 'No image model to try.'; return; }
    if (!picked) { msg.textContent = 'Pick an image first.'; file.focus(); return; }
    submit.disabled = true;
    msg.textContent = 'Classifying…';
    msg.className = '';
    const t0 = performance.now();
    try {
      const r = await api('POST', `/v1/models/${encodeURIComponent(select.value)}/classify?input_image=true&top_k=5`,
        { body: picked, type: picked.type || 'application/octet-stream' });
      const ms = performance.now() - t0;
      if (!page.alive) return;
      results.replaceChildren(...(r.predictions || []).map((p) => h('li', { 'data-label': p.label, 'data-score': String(p.score) },
        h('span', {}, p.label),
        h('progress', { max: 1, value: p.score, 'aria-label': `score of ${p.label}` }),
        h('span', {}, fmtPct(p.score)))));
      latency.textContent = `${ms.toFixed(1)} ms round trip (model ${r.model}, version ${r.version})`;
      if (r.input_image) { input.src = r.input_image; input.hidden = false; }
      msg.textContent = '';
    } catch (e) {
      msg.className = 'error';
      msg.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : e.message;
    } finally {
      submit.disabled = false;
    }
  });

  if (!(await needToken('inference', main))) return;
  const data = await api('GET', '/v1/models');
  if (!page.alive) return;
  const want = new URLSearchParams((location.hash.split('?')[1]) || '').get('model');
  const models = (data.models || []).filter((m) => m.ready && m.image_input);
  select.replaceChildren(...models.map((m) => h('option', { value: m.name, selected: m.name === want }, m.name)));
  if (!models.length) msg.textContent = 'No loaded model takes images.';
}

// ---- Server ------------------------------------------------------------------------------

// Prometheus text -> [{name, labels: {k: v}, value}]
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const [, k, v] of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

// Requests of the API (the console's own /metrics polls and file loads left out): total count
// and the cumulative latency histogram {le: count}.
const OWN = new Set(['metrics', 'console']);
function requestStats(samples) {
  let count = 0;
  const buckets = new Map();
  for (const s of samples) {
    if (OWN.has(s.labels.endpoint)) continue;
    if (s.name === 'dynd_requests_total') count += s.value;
    else if (s.name === 'dynd_request_duration_seconds_bucket') {
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      buckets.set(le, (buckets.get(le) || 0) + s.value);
    }
  }
  return { count, buckets };
}

// The q-quantile of a cumulative histogram (le -> count), interpolated within its bucket as
// Prometheus' histogram_quantile does; null without observations.
function quantile(q, buckets) {
  const les = [...buckets.keys()].sort((a, b) => a - b);
  const total = les.length ? buckets.get(les[les.length - 1]) : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const le of les) {
    const c = buckets.get(le);
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(c - prevCount, 1e-12));
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

async function pageServer(page, main) {
  const health = h('div');
  const meta = h('div');
  const models = h('div', { class: 'scroll' });
  const rateEl = h('div', { id: 'server-rate-chart', class: 'chart' });
  const latEl = h('div', { id: 'server-latency-chart', class: 'chart' });
  const now = h('p', { class: 'hint' });
  main.append(h('h1', {}, 'Server'), health, meta,
    h('h2', {}, 'Traffic'), h('p', { class: 'hint' }, 'From /metrics every 2 s: API requests per second and latency percentiles over each interval (the console\'s own /metrics and file requests left out).'),
    now, rateEl, latEl, h('h2', {}, 'Models: device and batching'), models);

  if (!(await needToken('inference', main))) return;
  const probe = async (path) => {
    try { await api('GET', path); return true; } catch (e) { return e instanceof ApiError && e.status ? `${e.status}: ${e.message}` : false; }
  };
  const [live, ready, srv, list] = await Promise.all([probe('/v2/health/live'), probe('/v2/health/ready'),
    api('GET', '/v2'), api('GET', '/v1/models')]);
  if (!page.alive) return;
  const badge = (v) => h('span', { class: `state ${v === true ? 'ready' : 'failed'}` }, v === true ? 'yes' : `no${typeof v === 'string' ? ` (${v})` : ''}`);
  health.replaceChildren(h('section', { class: 'card' }, h('h2', {}, 'Health'), dl([['Live', badge(live)], ['Ready', badge(ready)]])));
  meta.replaceChildren(h('section', { class: 'card' }, h('h2', {}, 'dynd'), dl([
    ['Name', srv.name], ['Version', srv.version], ['Extensions', (srv.extensions || []).join(', ')],
    ['Devices', [...new Set((list.models || []).filter((m) => m.device).map((m) => m.device))].join(', ') || 'no model loaded'],
  ])));
  const ready_models = (list.models || []).filter((m) => m.ready);
  const configs = await Promise.all(ready_models.map((m) => api('GET', `/v2/models/${encodeURIComponent(m.name)}/config`).catch(() => null)));
  if (!page.alive) return;
  models.replaceChildren(h('table', {},
    h('thead', {}, h('tr', {}, ['Model', 'Device', 'Max batch', 'Max queue delay', 'Max queue'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, ready_models.map((m, i) => {
      const c = configs[i] || {};
      const db = c.dynamic_batching || {};
      return h('tr', {}, h('td', {}, m.name), h('td', {}, m.device || ''), h('td', {}, c.max_batch_size ?? ''),
        h('td', {}, db.max_queue_delay_microseconds !== undefined ? `${db.max_queue_delay_microseconds} µs` : ''),
        h('td', {}, (db.default_queue_policy || {}).max_queue_size ?? ''));
    }))));

  const N = 60;
  const t = [];
  const rate = [];
  const p50 = [];
  const p90 = [];
  const p99 = [];
  const rateChart = page.chart({
    title: 'Requests per second', height: 180,
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [{}, { label: 'req/s', stroke: COLORS[0], fill: 'rgba(31,95,191,.15)', width: 2 }],
  }, [t, rate], rateEl);
  const latChart = page.chart({
    title: 'Latency (ms)', height: 180,
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [{}, { label: 'p50', stroke: COLORS[2], width: 2 }, { label: 'p90', stroke: COLORS[3], width: 2 }, { label: 'p99', stroke: COLORS[1], width: 2 }],
  }, [t, p50, p90, p99], latEl);
  let prev = null;
  const sample = async () => {
    const text = await api('GET', '/metrics', { text: true });
    if (!page.alive) return false;
    const ts = Date.now() / 1000;
    const st = requestStats(parseMetrics(text));
    if (prev) {
      const dt = ts - prev.ts;
      const delta = new Map();
      for (const [le, c] of st.buckets) delta.set(le, c - (prev.buckets.get(le) || 0));
      const ms = (q) => { const v = quantile(q, delta); return v === null ? null : v * 1000; };
      t.push(ts); rate.push(Math.max(0, (st.count - prev.count) / dt));
      p50.push(ms(0.5)); p90.push(ms(0.9)); p99.push(ms(0.99));
      if (t.length > N) for (const a of [t, rate, p50, p90, p99]) a.shift();
      rateChart.setData([t, rate]);
      latChart.setData([t, p50, p90, p99]);
      const last = (a) => a[a.length - 1];
      now.textContent = `Now: ${last(rate).toFixed(2)} req/s` +
        (last(p50) !== null ? `, p50 ${last(p50).toFixed(1)} ms, p90 ${last(p90).toFixed(1)} ms, p99 ${last(p99).toFixed(1)} ms` : ', no API request in the last interval');
    }
    prev = { ts, count: st.count, buckets: st.buckets };
    return true;
  };
  await sample();
  page.every(2000, sample);
}

// ---- start -------------------------------------------------------------------------------

let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (!current) return;
    for (const c of current.charts) c.setSize({ width: chartWidth(c.root.parentElement), height: c.height });
  }, 150);
});
window.addEventListener('hashchange', route);
setupTokenDialog();
route();
