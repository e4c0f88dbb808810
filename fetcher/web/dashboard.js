/* dashboard.js - chunkmill's live dashboard, served by the fetcher.
 *
 * Polls the fetcher's own HTTP port (same origin): /status every second, and
 * the job API of docs/jobs.md when the fetcher has it (/jobs, /members,
 * /jobs/NAME/dead). Without the API (an older fetcher, or one whose /jobs is
 * 404) the page shows the job and the mappers of /status. The throughput
 * chart is drawn from the samples this page keeps while it polls (nothing is
 * stored server side). The API token, when entered, is kept in this tab's
 * sessionStorage and sent as "Authorization: Bearer"; it is never shown or
 * put in a URL. Every text from the fetcher is inserted as text, never as
 * HTML. */
'use strict';

(function () {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;     // a background tab polls less
  const REQUEST_TIMEOUT_MS = 4000;
  const API_RECHECK_MS = 15000;    // /jobs 404: ask again now and then
  const DEAD_REFRESH_MS = 5000;
  const DEAD_ROWS_MAX = 200;       // per job; the API lists up to 1000
  const RATE_WINDOW_S = 10;        // records/s over the last ~10 s (as the API)
  const CHART_MAX_S = 300;         // chart: the last 5 minutes at most
  const CHART_MIN_S = 60;
  const TOKEN_KEY = 'chunkmill.api-token';
  const ACTIONS = [
    ['pause', 'Pause'], ['resume', 'Resume'], ['cancel', 'Cancel'], ['replay-dead', 'Replay dead'],
  ];

  const st = {
    token: '',
    api: 'unknown',   // 'ok' | 'absent' (GET /jobs 404) | 'auth' (401) | 'error'
    apiError: '',
    apiCheckedAt: 0,
    status: null,
    jobs: [],
    jobsFrom: '',
    members: [],
    membersFrom: '',
    samples: [],      // {t: seconds, jobs: {name: records saved}}
    dead: new Map(),  // job -> {at, count, list, error}
    cards: new Map(), // job -> card elements
    pollTimer: null,
    busy: false,
  };
  try { st.token = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { st.token = ''; }

  const $ = (id) => document.getElementById(id);

  /* el('div', {class: 'x', 'data-job': n, text: 't'}, child...) */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    return e;
  }

  /* ---- formatting ---- */
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  function fmtInt(v) { return isNum(v) ? Math.round(v).toLocaleString('en-US') : '—'; }
  function fmtRate(v) {
    if (!isNum(v)) return '—';
    return v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1);
  }
  function fmtDuration(s) {
    if (!isNum(s) || s < 0) return '—';
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 60) return Math.round(s) + ' s';
    if (s < 3600) {
      const m = Math.floor(s / 60), r = Math.round(s % 60);
      return r === 0 ? m + ' m' : r === 60 ? (m + 1) + ' m' : m + ' m ' + r + ' s';
    }
    return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' m';
  }
  function fmtAgo(ms) {
    if (!isNum(ms)) return '—';
    if (ms < 0) ms = 0;
    return ms < 1000 ? ms + ' ms ago' : fmtDuration(ms / 1000) + ' ago';
  }
  function fmtPct(r) { return isNum(r) ? (r * 100).toFixed(r >= 0.1 ? 0 : 1) + ' %' : '—'; }

  /* ---- requests ---- */
  function authHeaders() {
    return st.token ? { Authorization: 'Bearer ' + st.token } : {};
  }

  /* {status, body} (body: parsed JSON or null); status 0 when unreachable. */
  async function request(path, opts) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const r = await fetch(path, Object.assign({ cache: 'no-store', signal: ctl.signal }, opts));
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      return { status: r.status, body };
    } catch (e) {
      return { status: 0, body: null, error: e && e.name === 'AbortError' ? 'timed out' : String(e) };
    } finally {
      clearTimeout(timer);
    }
  }
  const apiGet = (path) => request(path, { headers: authHeaders() });

  /* ---- the /status job and mappers in the shapes of the job API ---- */
  function jobFromStatus(s, rate) {
    const j = s.job;
    if (!j || typeof j !== 'object') return null;
    const total = isNum(j.total_chunks) ? j.total_chunks : null;
    const unread = total !== null && isNum(j.chunks_created) ? Math.max(0, total - j.chunks_created) : 0;
    const done = j.done_chunks || 0;
    const dead = j.dead_chunks || 0;
    let state = typeof j.state === 'string' ? j.state : 'running';
    if (j.complete && typeof j.state !== 'string') state = dead > 0 ? 'complete_with_dead' : 'complete';
    let eta = null;
    if (total !== null && isNum(rate) && rate > 0 && isNum(j.chunk_size)) {
      eta = Math.max(0, total - done - dead) * j.chunk_size / rate;
      if (j.complete) eta = 0;
    }
    return {
      job: j.name, state, source: j.source || '',
      chunks: { total, done, leased: j.inflight || 0, pending: (j.pending || 0) + unread, dead },
      records_saved: j.records_done || 0, records_per_s: rate, eta_s: eta,
      last_error: null, redo: null,
    };
  }

  function membersFromStatus(s) {
    // /status does not count each mapper's leases: "in flight" is shown
    // from /members only.
    return (Array.isArray(s.members) ? s.members : []).map((m) => {
      return {
        id: m.id, role: m.role || 'mapper', version: m.version || '', inflight: null,
        last_heartbeat_ms_ago: m.last_seen_ms_ago, draining: !!m.draining, heard: m.heard !== false,
      };
    });
  }

  /* Records saved per second over the last RATE_WINDOW_S, from the samples. */
  function sampledRate(name) {
    const n = st.samples.length;
    if (n < 2) return null;
    const last = st.samples[n - 1];
    if (!(name in last.jobs)) return null;
    let first = null;
    for (let i = n - 2; i >= 0; i--) {
      const s = st.samples[i];
      if (!(name in s.jobs)) break;
      first = s;
      if (last.t - s.t >= RATE_WINDOW_S) break;
    }
    if (first === null || last.t <= first.t) return null;
    return Math.max(0, last.jobs[name] - first.jobs[name]) / (last.t - first.t);
  }

  /* ---- polling ---- */
  async function refresh() {
    const now = Date.now();
    const askJobs = st.api !== 'absent' || now - st.apiCheckedAt >= API_RECHECK_MS;
    const [s, j] = await Promise.all([
      request('/status'),
      askJobs ? apiGet('/jobs') : Promise.resolve(null),
    ]);
    if (s.status !== 200 || !s.body) {
      setConn('down', s.status === 0 ? 'fetcher unreachable' + (s.error ? ' (' + s.error + ')' : '')
        : 'GET /status: HTTP ' + s.status);
      return;
    }
    st.status = s.body;
    if (j) {
      st.apiCheckedAt = now;
      if (j.status === 200 && j.body && Array.isArray(j.body.jobs)) { st.api = 'ok'; st.apiError = ''; }
      else if (j.status === 404) { st.api = 'absent'; st.apiError = ''; }
      else if (j.status === 401) {
        st.api = 'auth';
        st.apiError = st.token ? 'the job API refused the token (401)' : 'the job API needs the API token (401)';
      } else {
        st.api = 'error';
        st.apiError = 'GET /jobs: ' + (j.status === 0 ? 'no answer' : 'HTTP ' + j.status) +
          (j.body && j.body.error ? ': ' + j.body.error : '');
      }
    }
    let mem = null;
    if (st.api === 'ok') mem = await apiGet('/members');

    // One sample per poll: records saved per job, for rates and the chart.
    const t = now / 1000;
    const sample = { t, jobs: {} };
    if (st.api === 'ok') {
      st.jobs = j.body.jobs.filter((x) => x && typeof x.job === 'string');
      st.jobsFrom = 'from /jobs';
    }
    // Without the API: a fetcher that lists its jobs in /status ("jobs",
    // job objects as the API's) shows them all; an older one has one "job".
    const statusJobs = Array.isArray(s.body.jobs) && s.body.jobs.length > 0
      ? s.body.jobs.filter((x) => x && typeof x.job === 'string') : null;
    if (st.api === 'ok') {
      for (const x of st.jobs) sample.jobs[x.job] = x.records_saved || 0;
    } else if (statusJobs) {
      for (const x of statusJobs) sample.jobs[x.job] = x.records_saved || 0;
    } else if (s.body.job && typeof s.body.job.name === 'string') {
      sample.jobs[s.body.job.name] = s.body.job.records_done || 0;
    }
    st.samples.push(sample);
    while (st.samples.length > 2 && t - st.samples[0].t > CHART_MAX_S + RATE_WINDOW_S) st.samples.shift();
    if (st.api !== 'ok') {
      if (statusJobs) {
        st.jobs = statusJobs;
      } else {
        const job = s.body.job ? jobFromStatus(s.body, sampledRate(s.body.job.name)) : null;
        st.jobs = job ? [job] : [];
      }
      st.jobsFrom = st.api === 'absent' ? 'from /status (this fetcher has no job API)'
        : 'from /status (' + st.apiError + ')';
    }
    if (mem && mem.status === 200 && mem.body && Array.isArray(mem.body.members)) {
      st.members = mem.body.members;
      st.membersFrom = 'from /members';
    } else {
      st.members = membersFromStatus(s.body);
      st.membersFrom = 'mappers, from /status' + (st.api === 'ok' ? '' : ' (savers are listed by the job API)');
    }
    if (st.api === 'ok') await refreshDead(now);
    render(now);
    const b = s.body;
    if (b.draining) setConn('warn', 'draining');
    else if (b.nats_connected === false) setConn('warn', 'NATS disconnected');
    else if (b.ready === false) setConn('warn', 'not ready');
    else setConn('ok', 'live');
    const u = $('updated');
    u.textContent = 'updated ' + new Date(now).toLocaleTimeString('en-GB');
    u.dataset.polledAt = String(now);
  }

  async function refreshDead(now) {
    const wanted = new Set();
    for (const j of st.jobs) {
      const count = (j.chunks && j.chunks.dead) || 0;
      if (count <= 0) continue;
      wanted.add(j.job);
      const d = st.dead.get(j.job);
      if (d && d.count === count && now - d.at < DEAD_REFRESH_MS) continue;
      const r = await apiGet('/jobs/' + encodeURIComponent(j.job) + '/dead');
      if (r.status === 200 && r.body && Array.isArray(r.body.dead))
        st.dead.set(j.job, { at: now, count, list: r.body.dead, error: '' });
      else
        st.dead.set(j.job, { at: now, count, list: d ? d.list : [],
          error: 'GET /jobs/' + j.job + '/dead: ' + (r.status ? 'HTTP ' + r.status : 'no answer') });
    }
    for (const k of [...st.dead.keys()]) if (!wanted.has(k)) st.dead.delete(k);
  }

  function schedule(ms) {
    clearTimeout(st.pollTimer);
    st.pollTimer = setTimeout(poll, ms);
  }
  async function poll() {
    if (st.busy) return;
    st.busy = true;
    const t0 = performance.now();
    try {
      await refresh();
    } catch (e) {
      setConn('down', 'dashboard error: ' + e);
    } finally {
      st.busy = false;
    }
    const every = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    schedule(Math.max(50, every - (performance.now() - t0)));
  }

  function setConn(kind, text) {
    const c = $('conn');
    c.dataset.state = kind;
    c.textContent = text;
    document.body.classList.toggle('stale', kind === 'down');
  }

  /* ---- rendering ---- */
  function render(now) {
    const s = st.status;
    $('fetcher-id').textContent = [s.id, s.version, s.uptime_s !== undefined ? 'up ' + fmtDuration(s.uptime_s) : '']
      .filter(Boolean).join(' · ');
    renderNotice();
    renderJobs();
    renderChart(now);
    renderVersions(s.versions || {});
    renderMembers();
    renderDead();
  }

  function renderNotice() {
    const n = $('notice');
    let text = '';
    if (st.token && st.api === 'absent') text = 'This fetcher has no job API (GET /jobs is 404): job actions are not available.';
    else if (st.api === 'auth' || st.api === 'error') text = st.apiError + (st.api === 'auth' ? ': enter the API token above.' : '');
    n.hidden = !text;
    n.textContent = text;
  }

  const FIELDS = [
    ['done', 'done'], ['leased', 'leased'], ['pending', 'pending'], ['dead', 'dead'], ['total', 'total'],
    ['records', 'records saved'], ['rate', 'records/s'], ['eta', 'ETA'],
  ];
  const SEGMENTS = ['done', 'leased', 'pending', 'dead'];

  function makeCard(name) {
    const c = { name };
    c.root = el('article', { class: 'job', 'data-job': name });
    c.state = el('span', { class: 'badge state' });
    c.source = el('span', { class: 'source muted' });
    c.root.append(el('div', { class: 'job-head' }, el('span', { class: 'job-name', text: name }), c.state, c.source));
    c.bar = el('div', { class: 'bar', role: 'img' });
    c.seg = {};
    for (const k of SEGMENTS) {
      c.seg[k] = el('span', { class: 'seg ' + k });
      c.bar.append(c.seg[k]);
    }
    c.root.append(c.bar);
    c.nums = {};
    const dl = el('dl', { class: 'nums' });
    for (const [k, label] of FIELDS) {
      c.nums[k] = el('dd', { 'data-field': k });
      dl.append(el('div', { class: 'num ' + k }, el('dt', { text: label }), c.nums[k]));
    }
    c.root.append(dl);
    c.extra = el('div', { class: 'job-extra' });
    c.root.append(c.extra);
    c.actions = el('div', { class: 'actions' });
    c.buttons = {};
    for (const [a, label] of ACTIONS) {
      c.buttons[a] = el('button', { type: 'button', 'data-action': a, text: label });
      c.buttons[a].addEventListener('click', () => act(name, a, null, c));
      c.actions.append(c.buttons[a]);
    }
    c.redoVersion = el('select', { 'aria-label': 'version to redo', 'data-redo-version': '' });
    c.buttons.redo = el('button', { type: 'button', 'data-action': 'redo', text: 'Redo version' });
    c.buttons.redo.addEventListener('click', () => {
      if (c.redoVersion.value) act(name, 'redo', { version: c.redoVersion.value }, c);
    });
    c.actions.append(el('span', { class: 'redo' }, c.redoVersion, c.buttons.redo));
    c.msg = el('span', { class: 'msg', role: 'status' });
    c.actions.append(c.msg);
    c.root.append(c.actions);
    return c;
  }

  function setNum(node, value, text) {
    node.dataset.value = value === null || value === undefined ? '' : String(value);
    node.textContent = text;
  }

  function renderJobs() {
    const box = $('jobs');
    $('jobs-source').textContent = st.jobsFrom;
    if (st.jobs.length === 0) {
      if (!box.querySelector('.empty.no-job')) box.replaceChildren(el('p', { class: 'muted empty no-job', text: 'no job yet' }));
      st.cards.clear();
      return;
    }
    box.querySelector('.empty')?.remove();
    const showActions = !!st.token && st.api === 'ok';
    const versions = Object.keys((st.status && st.status.versions) || {});
    const seen = new Set();
    let prev = null;
    for (const j of st.jobs) {
      seen.add(j.job);
      let c = st.cards.get(j.job);
      if (!c) { c = makeCard(j.job); st.cards.set(j.job, c); }
      // Keep the API's order (creation time) without re-inserting nodes
      // that are already in place (a focused select would lose focus).
      const want = prev ? prev.root.nextSibling : box.firstChild;
      if (want !== c.root) box.insertBefore(c.root, want);
      prev = c;
      updateCard(c, j, showActions, versions);
    }
    for (const [name, c] of st.cards) if (!seen.has(name)) { c.root.remove(); st.cards.delete(name); }
  }

  function updateCard(c, j, showActions, versions) {
    const ch = j.chunks || {};
    const known = isNum(ch.total);
    const sum = SEGMENTS.reduce((a, k) => a + (ch[k] || 0), 0);
    const total = known ? Math.max(ch.total, sum) : sum;
    c.root.dataset.state = j.state || '';
    c.state.textContent = (j.state || '?').replace(/_/g, ' ');
    c.state.dataset.state = j.state || '';
    c.source.textContent = j.source || '';
    for (const k of SEGMENTS) {
      const v = ch[k] || 0;
      c.seg[k].style.width = (total > 0 ? (100 * v / total) : 0) + '%';
      c.seg[k].title = k + ': ' + fmtInt(v);
    }
    c.bar.classList.toggle('unknown-total', !known);
    c.bar.setAttribute('aria-label', SEGMENTS.map((k) => k + ' ' + (ch[k] || 0)).join(', ') +
      (known ? ' of ' + ch.total : ', total unknown'));
    for (const k of SEGMENTS) setNum(c.nums[k], ch[k] || 0, fmtInt(ch[k] || 0));
    setNum(c.nums.total, known ? ch.total : null, known ? fmtInt(ch.total) : 'unknown');
    setNum(c.nums.records, j.records_saved || 0, fmtInt(j.records_saved || 0));
    setNum(c.nums.rate, isNum(j.records_per_s) ? j.records_per_s : null, fmtRate(j.records_per_s));
    // No ETA for a job that is not moving (finished, paused or queued).
    const still = /^(complete|complete_with_dead|cancelled|failed|paused|queued)$/.test(j.state || '');
    setNum(c.nums.eta, isNum(j.eta_s) && !still ? j.eta_s : null, still ? '—' : fmtDuration(j.eta_s));

    const extra = [];
    if (j.redo && typeof j.redo === 'object')
      extra.push(el('span', { class: 'redo-info', 'data-field': 'redo',
        text: 'redo of version ' + j.redo.version + ' (generation ' + j.redo.generation + '): ' +
          fmtInt(j.redo.done) + ' / ' + fmtInt(j.redo.chunks) + ' chunks' }));
    if (j.last_error) extra.push(el('span', { class: 'error', text: 'error: ' + j.last_error }));
    c.extra.replaceChildren(...extra);

    c.actions.hidden = !showActions;
    if (!showActions) return;
    const s = j.state;
    const allowed = {
      pause: s === 'queued' || s === 'running',
      resume: s === 'paused',
      cancel: s === 'queued' || s === 'running' || s === 'paused',
      'replay-dead': (ch.dead || 0) > 0 && s !== 'cancelled' && s !== 'failed',
      redo: versions.length > 0 && (s === 'complete' || s === 'complete_with_dead' || s === 'running'),
    };
    for (const [a, b] of Object.entries(c.buttons)) b.disabled = !allowed[a] || c.pending === true;
    const have = [...c.redoVersion.options].map((o) => o.value);
    if (have.join('\n') !== versions.join('\n')) {
      const keep = c.redoVersion.value;
      c.redoVersion.replaceChildren(...versions.map((v) => el('option', { value: v, text: v })));
      if (versions.includes(keep)) c.redoVersion.value = keep;
    }
    c.redoVersion.disabled = versions.length === 0;
  }

  async function act(name, action, body, c) {
    if (action === 'cancel' && !window.confirm('Cancel job ' + name + '? A cancelled job is final.')) return;
    c.pending = true;
    for (const b of Object.values(c.buttons)) b.disabled = true;
    c.msg.textContent = action + '…';
    c.msg.dataset.result = '';
    const r = await request('/jobs/' + encodeURIComponent(name) + '/' + action, {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
      body: JSON.stringify(body || {}),
    });
    c.pending = false;
    if (r.status >= 200 && r.status < 300) {
      c.msg.dataset.result = 'ok';
      c.msg.textContent = action + ': done' + (r.body && r.body.state ? ' (now ' + r.body.state.replace(/_/g, ' ') + ')' : '');
    } else {
      c.msg.dataset.result = 'error';
      const why = r.body && r.body.error ? r.body.error : (r.status ? 'HTTP ' + r.status : (r.error || 'no answer'));
      c.msg.textContent = action + ' failed: ' + (r.status === 401 ? 'the token was refused (401)' : why);
    }
    schedule(0);
  }

  /* records/s between consecutive samples, summed over the jobs present in
   * both (a job seen for the first time adds nothing: no spike at load). */
  function rateSeries() {
    const out = [];
    for (let i = 1; i < st.samples.length; i++) {
      const a = st.samples[i - 1], b = st.samples[i];
      const dt = b.t - a.t;
      if (dt <= 0) continue;
      let d = 0;
      for (const [k, v] of Object.entries(b.jobs)) if (k in a.jobs) d += Math.max(0, v - a.jobs[k]);
      out.push({ t: b.t, v: d / dt });
    }
    return out;
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function renderChart(now) {
    const box = $('chart');
    const series = rateSeries();
    const w = Math.max(240, Math.floor(box.clientWidth || 480));
    const h = 180;
    const pad = { l: 58, r: 10, t: 10, b: 24 };
    const tNow = now / 1000;
    const first = st.samples.length ? st.samples[0].t : tNow;
    const span = Math.min(CHART_MAX_S, Math.max(CHART_MIN_S, Math.ceil(tNow - first)));
    $('chart-span').textContent = fmtDuration(span);
    const vis = series.filter((p) => p.t >= tNow - span);
    const ymax = niceCeil(vis.reduce((a, p) => Math.max(a, p.v), 0));
    const x = (t) => pad.l + (w - pad.l - pad.r) * (1 - (tNow - t) / span);
    const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / ymax);
    const root = svg('svg', { width: w, height: h, viewBox: '0 0 ' + w + ' ' + h, role: 'img',
      'aria-label': 'records per second over the last ' + span + ' seconds' });
    for (const f of [0, 0.5, 1]) {
      const v = ymax * f;
      root.append(svg('line', { class: 'grid', x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }));
      root.append(svg('text', { class: 'axis', x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', text: fmtRate(v) }));
    }
    const step = span > 120 ? 60 : span > 60 ? 30 : 15;
    for (let a = 0; a <= span; a += step) {
      root.append(svg('text', { class: 'axis', x: x(tNow - a), y: h - 6,
        'text-anchor': a === 0 ? 'end' : 'middle', text: a === 0 ? 'now' : '-' + fmtDuration(a) }));
    }
    if (vis.length > 0) {
      const pts = vis.map((p) => x(p.t).toFixed(1) + ',' + y(p.v).toFixed(1));
      const area = 'M' + x(vis[0].t).toFixed(1) + ',' + y(0) + ' L' + pts.join(' L') +
        ' L' + x(vis[vis.length - 1].t).toFixed(1) + ',' + y(0) + ' Z';
      root.append(svg('path', { class: 'area', d: area }));
      root.append(svg('polyline', { class: 'line', points: pts.join(' '), 'data-samples': vis.length }));
      const last = vis[vis.length - 1];
      root.append(svg('circle', { class: 'dot', cx: x(last.t), cy: y(last.v), r: 3 }));
    } else {
      root.append(svg('text', { class: 'axis', x: w / 2, y: h / 2, 'text-anchor': 'middle', text: 'collecting samples…' }));
    }
    box.replaceChildren(root);
  }

  function renderVersions(versions) {
    const tbody = $('versions').querySelector('tbody');
    const names = Object.keys(versions).sort();
    $('versions-empty').hidden = names.length > 0;
    tbody.replaceChildren(...names.map((name) => {
      const v = versions[name] || {};
      const r = isNum(v.error_ratio) ? v.error_ratio : 0;
      const cls = r >= 0.05 ? 'bad' : r >= 0.01 ? 'warn' : 'good';
      return el('tr', { 'data-version': name },
        el('td', { class: 'mono', 'data-field': 'version', text: name }),
        el('td', { class: 'n', 'data-field': 'members', text: fmtInt(v.members) }),
        el('td', { class: 'n', 'data-field': 'dispatched', text: fmtInt(v.dispatched) }),
        el('td', { class: 'n', 'data-field': 'acked', text: fmtInt(v.acked) }),
        el('td', { class: 'n', 'data-field': 'naks', text: fmtInt(v.naks) }),
        el('td', { class: 'n', 'data-field': 'expired', text: fmtInt(v.expired) }),
        el('td', { class: 'rate ' + cls, 'data-field': 'error_ratio', 'data-value': r },
          el('span', { class: 'ratecell' },
            // The bar is full at 20 % errors: small rates stay visible.
            el('span', { class: 'ratebar' }, el('span', { style: 'width:' + Math.min(100, r * 100 * 5) + '%' })),
            el('span', { text: fmtPct(r) }))));
    }));
  }

  function renderMembers() {
    $('members-source').textContent = st.membersFrom;
    const order = { fetcher: 0, mapper: 1, saver: 2 };
    const list = st.members.filter((m) => m && typeof m.id === 'string').slice().sort((a, b) =>
      ((order[a.role] ?? 3) - (order[b.role] ?? 3)) || a.id.localeCompare(b.id));
    $('members-empty').hidden = list.length > 0;
    $('members').querySelector('tbody').replaceChildren(...list.map((m) => {
      let state = m.draining ? 'draining' : m.heard === false ? 'not heard yet' : 'ok';
      if (state === 'ok' && isNum(m.last_heartbeat_ms_ago) && m.last_heartbeat_ms_ago > 10000) state = 'silent';
      return el('tr', { 'data-member': m.id, 'data-role': m.role || '' },
        el('td', { class: 'mono', 'data-field': 'id', text: m.id }),
        el('td', { 'data-field': 'role' }, el('span', { class: 'badge role', 'data-role': m.role || '', text: m.role || '?' })),
        el('td', { class: 'mono', 'data-field': 'version', text: m.version || '' }),
        el('td', { class: 'n', 'data-field': 'inflight', 'data-value': isNum(m.inflight) ? m.inflight : '', text: fmtInt(m.inflight) }),
        el('td', { class: 'n', 'data-field': 'heartbeat', 'data-value': isNum(m.last_heartbeat_ms_ago) ? m.last_heartbeat_ms_ago : '',
          text: fmtAgo(m.last_heartbeat_ms_ago) }),
        el('td', { 'data-field': 'state', class: 'mstate ' + state.replace(/ /g, '-'), text: state }));
    }));
  }

  function renderDead() {
    const box = $('dead');
    const parts = [];
    for (const j of st.jobs) {
      const count = (j.chunks && j.chunks.dead) || 0;
      if (count <= 0) continue;
      const head = el('h3', { text: j.job + ': ' + fmtInt(count) + ' dead chunk' + (count === 1 ? '' : 's') });
      const d = st.dead.get(j.job);
      if (st.api !== 'ok') {
        parts.push(el('div', { class: 'dead-job', 'data-job': j.job }, head, el('p', { class: 'muted',
          text: 'Their reasons are listed by the job API (GET /jobs/' + j.job + '/dead) and kept in the ' +
            'fetcher\'s ledger (sqlite3 LEDGER \'SELECT idx, attempt, reason FROM chunks WHERE state = 3\').' })));
        continue;
      }
      const rows = (d ? d.list : []).slice(0, DEAD_ROWS_MAX).map((x) => el('tr', { 'data-index': x.index },
        el('td', { class: 'n', text: fmtInt(x.index) }),
        el('td', { class: 'n', text: fmtInt(x.attempts) }),
        el('td', { class: 'reason', text: x.reason || '' })));
      const table = el('table', { class: 'dead-table' },
        el('thead', {}, el('tr', {}, el('th', { class: 'n', text: 'chunk' }), el('th', { class: 'n', text: 'attempts' }), el('th', { text: 'reason' }))),
        el('tbody', {}, ...rows));
      parts.push(el('div', { class: 'dead-job', 'data-job': j.job }, head,
        d && d.error ? el('p', { class: 'error', text: d.error }) : null,
        el('div', { class: 'scroll' }, table),
        d && rows.length < count ? el('p', { class: 'muted', text: 'showing ' + rows.length + ' of ' + fmtInt(count) +
          ' (all: GET /jobs/' + j.job + '/dead)' }) : null));
    }
    if (parts.length === 0) parts.push(el('p', { class: 'muted', text: 'none' }));
    box.replaceChildren(...parts);
  }

  /* ---- token ---- */
  function renderToken() {
    $('token').value = '';
    $('token').placeholder = st.token ? 'token set (this tab only)' : 'paste to enable actions';
    $('token-forget').hidden = !st.token;
  }
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token').value.trim();
    if (!v) return;
    st.token = v;
    try { sessionStorage.setItem(TOKEN_KEY, v); } catch (e) { /* private mode: this page only */ }
    if (st.api === 'absent') st.apiCheckedAt = 0;
    renderToken();
    schedule(0);
  });
  $('token-forget').addEventListener('click', () => {
    st.token = '';
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ }
    renderToken();
    schedule(0);
  });
  window.addEventListener('resize', () => { if (st.status) renderChart(Date.now()); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) schedule(0); });

  renderToken();
  poll();
})();
