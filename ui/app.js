// mrprov console: plain JavaScript, no build step, no library. Every view
// reads the same HTTP API as any client, with the same API key; the key is
// kept in sessionStorage (this tab only), sent in the Authorization header,
// never in a URL, never logged. Pages are built with textContent only:
// nothing the API returns is ever parsed as HTML.
'use strict';

(function () {
  const KEY = 'mrprov.api_key';
  const view = document.getElementById('view');
  let generation = 0; // bumped on every navigation: stale timers and answers stop

  // ---- DOM helpers -------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const text = (v) => (v === undefined || v === null || v === '' ? '—' : String(v));
  // A job's subscription: the instance's page; a rollout driver's job
  // (`_rollout_<id>`) links to its rollout; other internal jobs (the sweep,
  // `_…`) have no page of their own.
  const subscriptionLink = (sub) => {
    const s = String(sub == null ? '' : sub);
    const ro = s.match(/^_rollout_(.+)$/);
    if (ro) return el('a', { href: '#/rollout/' + encodeURIComponent(ro[1]) }, 'rollout ' + ro[1]);
    if (s.startsWith('_')) return el('span', { class: 'mono muted' }, s);
    return el('a', { href: '#/instance/' + encodeURIComponent(s) }, s);
  };
  // What a rollout moves its instances to: the image, and/or the names of
  // the environment keys it sets (their values are never shown).
  const rolloutTarget = (r) => {
    const keys = Array.isArray(r.env_keys) ? r.env_keys
      : (r.env && typeof r.env === 'object' ? Object.keys(r.env).sort() : []);
    const parts = [];
    if (r.image) parts.push(String(r.image));
    if (keys.length) parts.push('env ' + keys.join(', '));
    return parts.length ? parts.join(' + ') : '—';
  };
  // a job's state: "running" is work under way (blue), not a healthy instance (green)
  const stateClass = (s) => 's-' + String(s).replace(/_/g, '-').replace(/[^a-z-]/g, '');
  const jobBadge = (s) => el('span', { class: 'badge ' + (s === 'running' ? 's-running-job' : stateClass(s)) }, text(s));
  const badge = (s, extra) => el('span', { class: 'badge ' + stateClass(s) + (extra ? ' ' + extra : '') }, text(s));
  function kv(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [k, v] of pairs) dl.append(el('dt', {}, k), el('dd', {}, v instanceof Node ? v : text(v)));
    return dl;
  }
  function when(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function link(url) {
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) return text(url);
    return el('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, url);
  }
  function notice(msg, isError) {
    const n = document.getElementById('notice');
    n.textContent = msg;
    n.className = 'notice' + (isError ? ' error' : '');
    n.hidden = false;
    clearTimeout(notice.t);
    notice.t = setTimeout(() => { n.hidden = true; }, 6000);
  }

  // ---- API key and requests ---------------------------------------------
  const getKey = () => sessionStorage.getItem(KEY) || '';
  function updateKeyButton() {
    document.getElementById('key-button').textContent = getKey() ? 'Forget key' : 'API key';
  }

  let keyWaiters = [];
  function askKey(message) {
    const dlg = document.getElementById('key-dialog');
    const err = document.getElementById('key-error');
    err.hidden = !message;
    err.textContent = message || '';
    document.getElementById('key-input').value = '';
    if (!dlg.open) dlg.showModal();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }
  function keyDone(ok) {
    const w = keyWaiters;
    keyWaiters = [];
    w.forEach((r) => r(ok));
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || ('HTTP ' + status));
      this.status = status;
      this.body = body;
    }
  }

  // One API call: the key goes in the Authorization header only. A 401
  // asks for a key once and repeats the call.
  async function api(method, path, retried) {
    const headers = { Accept: 'application/json' };
    const key = getKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    const r = await fetch(path, { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (r.status === 401 && !retried) {
      if (key) sessionStorage.removeItem(KEY);
      updateKeyButton();
      const ok = await askKey(key ? 'That key was refused.' : 'This mrprov needs an API key.');
      if (ok) return api(method, path, true);
    }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  // ---- Confirmation ------------------------------------------------------
  function confirmAction(message, okLabel) {
    const dlg = document.getElementById('confirm-dialog');
    document.getElementById('confirm-text').textContent = message;
    document.getElementById('confirm-ok').textContent = okLabel || 'Confirm';
    dlg.returnValue = '';
    dlg.showModal();
    return new Promise((resolve) => {
      const done = (v) => {
        dlg.removeEventListener('close', onClose);
        resolve(v);
      };
      const onClose = () => done(dlg.returnValue === 'ok');
      dlg.addEventListener('close', onClose);
    });
  }

  // Runs a change after confirmation (see run).
  async function act(message, okLabel, method, path, after) {
    if (!(await confirmAction(message, okLabel))) return;
    await run(method, path, after);
  }

  // Runs a change that needs no confirmation (it starts nothing, or only
  // stops starting things); notices its outcome; then `after`.
  async function run(method, path, after) {
    try {
      const r = await api(method, path);
      notice((r && r.message) || 'Done.');
    } catch (e) {
      notice(e.message, true);
    }
    if (after) after();
  }

  // ---- Routing -----------------------------------------------------------
  function parseHash() {
    const h = location.hash.replace(/^#\/?/, '');
    const [path, query] = h.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, params: new URLSearchParams(query || '') };
  }
  function go(parts, params) {
    const q = params && params.toString();
    location.hash = '#/' + parts.map(encodeURIComponent).join('/') + (q ? '?' + q : '');
  }

  async function route() {
    const gen = ++generation;
    const { parts, params } = parseHash();
    const page = parts[0] || 'instances';
    document.querySelectorAll('[data-nav]').forEach((a) => {
      a.classList.toggle('active', a.dataset.nav === page || (page === 'instance' && a.dataset.nav === 'instances') ||
        (page === 'job' && a.dataset.nav === 'jobs') || (page === 'rollout' && a.dataset.nav === 'rollouts'));
    });
    const out = el('div', { 'data-page': page });
    try {
      if (page === 'instance' && parts[1]) await instancePage(out, parts[1], params, gen);
      else if (page === 'job' && parts[1]) await jobPage(out, parts[1], gen);
      else if (page === 'jobs') await jobsPage(out, params, gen);
      else if (page === 'health') await healthPage(out, gen);
      else if (page === 'rollouts') await rolloutsPage(out);
      else if (page === 'rollout' && parts[1]) await rolloutPage(out, parts[1], params, gen);
      else await instancesPage(out, params, gen);
    } catch (e) {
      out.append(el('p', { class: 'error' }, 'Could not load: ' + e.message));
    }
    if (gen === generation) view.replaceChildren(out);
  }

  // ---- Instances ---------------------------------------------------------
  const STATUSES = ['pending', 'provisioning', 'starting', 'running', 'unhealthy', 'stopped', 'suspended', 'updating',
    'deprovisioning', 'deprovisioned', 'failed'];

  async function instancesPage(out, params) {
    const q = new URLSearchParams();
    for (const k of ['q', 'status', 'tier', 'host', 'drift', 'offset']) if (params.get(k)) q.set(k, params.get(k));
    q.set('limit', '50');
    const [data, tiers] = await Promise.all([api('GET', '/api/v1/instances?' + q), api('GET', '/api/v1/tiers').catch(() => null)]);
    const set = (k, v) => {
      const p = new URLSearchParams(params);
      if (v) p.set(k, v); else p.delete(k);
      p.delete('offset');
      go(['instances'], p);
    };
    out.append(el('h1', {}, 'Instances'));

    const chips = el('div', { class: 'chips', 'data-test': 'counts' });
    let all = 0;
    for (const s of STATUSES) all += data.counts[s] || 0;
    chips.append(el('button', { type: 'button', class: 'chip' + (params.get('status') ? '' : ' on'), onclick: () => set('status', '') }, 'all ' + all));
    for (const s of STATUSES) {
      if (!data.counts[s]) continue;
      chips.append(el('button', { type: 'button', class: 'chip' + (params.get('status') === s ? ' on' : ''), 'data-status': s,
        onclick: () => set('status', s) }, s + ' ' + data.counts[s]));
    }

    const search = el('input', { type: 'search', placeholder: 'Search subscription, app, account', 'aria-label': 'Search',
      value: params.get('q') || '', id: 'search' });
    search.addEventListener('change', () => set('q', search.value.trim()));
    const select = (name, label, options) => {
      const s = el('select', { 'aria-label': label, name },
        el('option', { value: '' }, label + ': any'),
        options.map((o) => el('option', { value: o, selected: params.get(name) === o }, o)));
      s.addEventListener('change', () => set(name, s.value));
      return s;
    };
    const tierNames = tiers && tiers.tiers ? tiers.tiers.map((t) => t.name) : [];
    const filters = el('div', { class: 'filters' }, search,
      select('status', 'Status', STATUSES),
      select('tier', 'Tier', tierNames),
      data.hosts ? select('host', 'Host', [...new Set(data.instances.map((i) => i.host).filter(Boolean))]) : null,
      select('drift', 'Drift', ['true', 'false']),
      el('button', { type: 'button', class: 'quiet', onclick: route }, 'Refresh'));
    out.append(chips, filters);

    const showHost = data.instances.some((i) => i.host);
    const rows = data.instances.map((i) => el('tr', { class: 'link', 'data-sub': i.subscription_id,
      onclick: () => go(['instance', i.subscription_id]) },
      el('td', {}, el('a', { href: '#/instance/' + encodeURIComponent(i.subscription_id) }, i.subscription_id),
        el('div', { class: 'muted mono' }, i.app_name)),
      el('td', {}, badge(i.status), i.error ? el('div', { class: 'error' }, i.error) : null),
      el('td', {}, i.tier),
      showHost ? el('td', {}, text(i.host)) : null,
      el('td', {}, i.drift === null ? el('span', { class: 'muted' }, 'not probed')
        : i.drift.drifted ? badge('drift') : 'in sync'),
      el('td', { class: 'hide-narrow' }, i.job ? [i.job.operation, ' ', jobBadge(i.job.state)] : '—'),
      el('td', { class: 'hide-narrow' }, when(i.updated_at))));
    const table = el('table', { id: 'instances' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Subscription / app'), el('th', {}, 'Status'), el('th', {}, 'Tier'),
        showHost ? el('th', {}, 'Host') : null, el('th', {}, 'Drift'), el('th', { class: 'hide-narrow' }, 'Last job'),
        el('th', { class: 'hide-narrow' }, 'Updated'))),
      el('tbody', {}, rows));
    out.append(el('div', { class: 'table-wrap' }, rows.length ? table : el('p', { class: 'empty' }, 'No instance matches.')));
    out.append(pager(data, params, ['instances']));
  }

  function pager(data, params, parts) {
    const from = data.total ? data.offset + 1 : 0;
    const to = data.offset + (data.instances || data.jobs).length;
    const move = (off) => {
      const p = new URLSearchParams(params);
      if (off > 0) p.set('offset', String(off)); else p.delete('offset');
      go(parts, p);
    };
    return el('div', { class: 'pager' },
      el('button', { type: 'button', class: 'quiet', disabled: data.offset === 0, onclick: () => move(Math.max(0, data.offset - data.limit)) }, 'Previous'),
      el('span', {}, from + '–' + to + ' of ' + data.total),
      el('button', { type: 'button', class: 'quiet', disabled: to >= data.total, onclick: () => move(data.offset + data.limit) }, 'Next'));
  }

  // ---- One instance ------------------------------------------------------
  async function instancePage(out, sub, params, gen) {
    const [inst, jobs] = await Promise.all([
      api('GET', '/api/v1/status/' + encodeURIComponent(sub)),
      api('GET', '/api/v1/jobs?limit=20&subscription_id=' + encodeURIComponent(sub))]);
    out.append(el('h1', {}, inst.subscription_id, ' ', badge(inst.status)));
    if (inst.error) out.append(el('p', { class: 'error', 'data-test': 'instance-error' }, inst.error));
    const limits = inst.limits || {};
    const drift = inst.drift;
    out.append(el('div', { class: 'cards' },
      el('section', { class: 'card' }, el('h2', {}, 'Instance'), kv([
        ['App', el('span', { class: 'mono' }, inst.app_name)], ['Account', inst.account_id], ['Tier', inst.tier],
        ['Host', inst.host], ['Image', inst.image ? el('span', { class: 'mono' }, inst.image) : null],
        ['Pinned', el('span', { 'data-test': 'pinned' }, inst.pinned ? badge('pinned') : 'no')],
        ['Dry run', inst.dry_run ? 'yes' : 'no'], ['Created', when(inst.created_at)],
        ['Updated', when(inst.updated_at)]])),
      el('section', { class: 'card' }, el('h2', {}, 'URLs'), kv([
        ['Frontend', link(inst.urls && inst.urls.frontend)], ['Backend', link(inst.urls && inst.urls.backend)],
        ['Matrix', link(inst.urls && inst.urls.matrix)]])),
      el('section', { class: 'card' }, el('h2', {}, 'Limits'), kv(Object.keys(limits).filter((k) => k !== 'cpu_limit').sort()
        .map((k) => [k, limits[k]]))),
      el('section', { class: 'card' }, el('h2', {}, 'Health and drift'), kv([
        ['Health', inst.health_state ? badge(inst.health_state) : null], ['Checked', when(inst.health_checked_at)],
        ['Health error', inst.health_error],
        ['Drift', drift === null || drift === undefined ? 'not probed' : (drift.resources.length ? badge('drift') : 'in sync')],
        ['Drift checked', drift ? when(drift.checked_at) : null],
        ['Drifted', drift && drift.resources.length ? drift.resources.map((r) => r.resource).join(', ') : null]]))));

    const reload = () => route();
    const name = inst.subscription_id;
    const actions = el('div', { class: 'actions' });
    const lifecycle = (action, label, what) => el('button', { type: 'button', class: action === 'start' ? '' : 'danger', 'data-action': action,
      onclick: () => act(what + ' ' + name + '?', label, 'POST', '/api/v1/instances/' + encodeURIComponent(name) + '/' + action, reload) }, label);
    if (!['deprovisioned', 'deprovisioning'].includes(inst.status)) {
      actions.append(lifecycle('stop', 'Stop', 'Stop the apps of'), lifecycle('start', 'Start', 'Start the apps of'),
        lifecycle('restart', 'Restart', 'Restart the apps of'));
      // a pin keeps the instance on its image (rollouts skip it); it starts
      // nothing and unpin undoes it, so it asks no confirmation
      const pin = inst.pinned ? 'unpin' : 'pin';
      actions.append(el('button', { type: 'button', class: 'quiet', 'data-action': pin,
        onclick: () => run('POST', '/api/v1/instances/' + encodeURIComponent(name) + '/' + pin, reload) },
      inst.pinned ? 'Unpin image' : 'Pin image'));
    }
    out.append(actions);

    out.append(el('h2', {}, 'Jobs'));
    out.append(jobsTable(jobs.jobs, false, reload));
    const chosen = params.get('job') || (inst.job && inst.job.id) || (jobs.jobs[0] && jobs.jobs[0].id);
    if (chosen) {
      out.append(el('h2', {}, 'Steps of ', el('span', { class: 'mono' }, chosen)));
      out.append(await stepLog(chosen, gen));
    }
  }

  // ---- Jobs --------------------------------------------------------------
  function jobsTable(list, showInstance, after) {
    if (!list.length) return el('div', { class: 'table-wrap' }, el('p', { class: 'empty' }, 'No jobs.'));
    const rows = list.map((j) => {
      const fs = j.failed_step;
      return el('tr', { 'data-job': j.id, 'data-state': j.state },
        el('td', {}, el('a', { class: 'mono', href: '#/job/' + encodeURIComponent(j.id) }, j.id),
          el('div', { class: 'muted' }, when(j.created_at))),
        showInstance ? el('td', {}, subscriptionLink(j.subscription_id)) : null,
        el('td', {}, j.operation),
        el('td', {}, jobBadge(j.state), j.state === 'running' || j.state === 'queued'
          ? el('div', { class: 'muted' }, j.steps_done + '/' + j.steps_total + (j.step ? ' · ' + j.step : '')) : null),
        el('td', { class: 'err', 'data-test': 'job-error' }, j.error || '',
          fs ? el('div', { class: 'mono', 'data-test': 'failed-step' }, 'step ' + fs.seq + ': ' + fs.command) : null),
        el('td', {}, j.retryable ? el('button', { type: 'button', class: 'danger', 'data-action': 'retry',
          onclick: () => act('Queue ' + j.operation + ' of ' + j.subscription_id + ' again (retry of ' + j.id + ')?', 'Retry',
            'POST', '/api/v1/jobs/' + encodeURIComponent(j.id) + '/retry', after) }, 'Retry') : null));
    });
    return el('div', { class: 'table-wrap' }, el('table', { class: 'jobs' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Job'), showInstance ? el('th', {}, 'Subscription') : null,
        el('th', {}, 'Operation'), el('th', {}, 'State'), el('th', {}, 'Error / failed step'), el('th', {}, ''))),
      el('tbody', {}, rows)));
  }

  async function jobsPage(out, params) {
    const failed = params.get('state') === 'failed';
    const q = new URLSearchParams({ limit: '50' });
    if (failed) q.set('state', 'failed');
    if (params.get('offset')) q.set('offset', params.get('offset'));
    const data = await api('GET', '/api/v1/jobs?' + q);
    out.append(el('h1', {}, 'Jobs'));
    out.append(el('div', { class: 'chips' },
      el('a', { class: 'chip' + (failed ? '' : ' on'), href: '#/jobs' }, 'Recent'),
      el('a', { class: 'chip' + (failed ? ' on' : ''), href: '#/jobs?state=failed', 'data-test': 'failed-tab' }, 'Failed'),
      el('button', { type: 'button', class: 'quiet', onclick: route }, 'Refresh')));
    out.append(jobsTable(data.jobs, true, route));
    out.append(pager(data, params, ['jobs']));
  }

  async function jobPage(out, id, gen) {
    const j = await api('GET', '/api/v1/jobs/' + encodeURIComponent(id));
    out.append(el('h1', {}, 'Job ', el('span', { class: 'mono' }, j.id)));
    out.append(el('div', { class: 'cards' }, el('section', { class: 'card' }, kv([
      ['Subscription', subscriptionLink(j.subscription_id)],
      ['Operation', j.operation], ['Created', when(j.created_at)], ['Generation', j.generation],
      ['Attempts', j.attempts]]))));
    out.append(el('h2', {}, 'Steps'));
    out.append(await stepLog(id, gen));
  }

  // A job's step log: re-read while the job is queued or running, first
  // after 1 s, then less often while nothing moves (×1.5, at most 8 s),
  // back to 1 s as soon as a step moves; stops when the job ends or the
  // page is left.
  async function stepLog(id, gen) {
    const box = el('div', { class: 'steplog', 'data-job': id });
    let delay = 1000;
    let lastSig = '';
    const render = (j) => {
      const head = el('p', {}, jobBadge(j.state), ' ', j.operation, ' · ',
        el('span', { 'data-test': 'steps-done' }, String(j.steps_done)), '/', String(j.steps_total), ' steps done',
        j.step ? ' · ' + j.step : '', j.waiting_for ? ' · waiting for ' + j.waiting_for : '',
        j.state === 'running' || j.state === 'queued' ? el('span', { class: 'live' }, ' · live') : null);
      const list = el('ol', { class: 'steps' }, j.steps.map((s) => el('li', { 'data-seq': s.seq, 'data-state': s.state },
        el('span', { class: 'st' }, jobBadge(s.state)),
        el('span', { class: 'cmd mono' }, s.seq + '. ' + s.command),
        s.duration_ms !== null ? el('span', { class: 'muted' }, ' (' + s.duration_ms + ' ms)') : null,
        s.error ? el('div', { class: 'error' }, s.error) : null,
        s.output ? el('pre', { class: 'out' }, s.output) : null)));
      box.replaceChildren(head, j.error ? el('p', { class: 'error', 'data-test': 'job-error' }, j.error) : '',
        j.steps.length ? list : el('p', { class: 'muted' }, 'No steps yet.'));
    };
    const poll = async () => {
      if (gen !== generation) return;
      let j;
      try {
        j = await api('GET', '/api/v1/jobs/' + encodeURIComponent(id));
      } catch (e) {
        box.append(el('p', { class: 'error' }, e.message));
        return;
      }
      if (gen !== generation) return;
      render(j);
      if (j.state !== 'queued' && j.state !== 'running') return;
      const sig = j.steps_done + '/' + j.steps_total + '/' + j.steps.map((s) => s.state).join('');
      delay = sig !== lastSig ? 1000 : Math.min(delay * 1.5, 8000);
      lastSig = sig;
      setTimeout(poll, delay);
    };
    await poll();
    return box;
  }

  // ---- Rollouts ----------------------------------------------------------
  // A rollout's instance steps: waiting, in flight, and finished three ways.
  const STEP_STATES = ['pending', 'updating', 'checking', 'done', 'failed', 'skipped', 'unchanged', 'reverting',
    'rolled_back', 'rollback_failed'];
  const IN_FLIGHT = ['updating', 'checking', 'reverting'];
  const BACK = ['reverting', 'rolled_back', 'rollback_failed'];
  const ROLLOUT_LIVE = ['running', 'rolling_back'];
  const n = (counts, ...states) => states.reduce((a, s) => a + ((counts && Number(counts[s])) || 0), 0);

  // changed / failed / skipped of total, and a bar of the finished steps
  function progress(counts, total) {
    const changed = n(counts, 'done');
    const failed = n(counts, 'failed', 'rollback_failed');
    const skipped = n(counts, 'skipped', 'unchanged');
    const back = n(counts, 'rolled_back');
    const open = n(counts, 'pending', ...IN_FLIGHT);
    const tot = Number(total) || 0;
    return el('div', { class: 'progress', 'data-test': 'progress' },
      el('progress', { max: String(Math.max(tot, 1)), value: String(Math.max(0, tot - open)) }),
      el('div', {}, changed + ' changed · ', el('span', { class: failed ? 'error' : '' }, failed + ' failed'),
        ' · ' + skipped + ' skipped' + (back ? ' · ' + back + ' rolled back' : '') + ' / ' + tot));
  }

  function budget(failures, limit) {
    const f = Number(failures) || 0;
    return el('span', { class: f > Number(limit) ? 'error' : '', 'data-test': 'budget' },
      f + ' of ' + text(limit) + ' used');
  }

  async function rolloutsPage(out) {
    const data = await api('GET', '/api/v1/rollouts');
    out.append(el('h1', {}, 'Rollouts'));
    out.append(el('div', { class: 'filters' }, el('button', { type: 'button', class: 'quiet', onclick: route }, 'Refresh')));
    const rows = data.rollouts.map((r) => el('tr', { class: 'link', 'data-rollout': r.id, 'data-state': r.state,
      onclick: () => go(['rollout', r.id]) },
      el('td', {}, el('a', { class: 'mono', href: '#/rollout/' + encodeURIComponent(r.id) }, r.id)),
      el('td', {}, jobBadge(r.state), r.reason ? el('div', { class: 'muted' }, r.reason) : null),
      el('td', { class: 'mono wrap' }, rolloutTarget(r)),
      el('td', {}, progress(r.counts, r.total), el('div', { class: 'muted' }, 'wave ' + text(r.wave))),
      el('td', {}, budget(r.failures, r.failure_budget)),
      el('td', { class: 'hide-narrow' }, when(r.created_at)),
      el('td', { class: 'hide-narrow' }, when(r.updated_at))));
    const table = el('table', { id: 'rollouts' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Rollout'), el('th', {}, 'State'), el('th', {}, 'Image'),
        el('th', {}, 'Progress'), el('th', {}, 'Failure budget'), el('th', { class: 'hide-narrow' }, 'Created'),
        el('th', { class: 'hide-narrow' }, 'Updated'))),
      el('tbody', {}, rows));
    out.append(el('div', { class: 'table-wrap' }, rows.length ? table
      : el('p', { class: 'empty' }, 'No rollouts yet (POST /api/v1/rollouts or mrprov rollout --create starts one).')));
  }

  // One rollout: re-read while it runs or rolls back (1 s while steps
  // move, backing off to 8 s while they do not), like a job's step log.
  const SHOWN = 500; // instance rows drawn at once; the state chips narrow them
  async function rolloutPage(out, id, params, gen) {
    const box = el('div', { 'data-rollout': id });
    const filter = params.get('state') || '';
    const path = '/api/v1/rollouts/' + encodeURIComponent(id);
    let delay = 1000;
    let lastSig = '';
    let timer = null;
    let seq = 0; // an action's re-read overtakes a pending one: only the newest answer draws
    const again = () => { clearTimeout(timer); poll(); };
    const button = (action, label, cls, question) => el('button', { type: 'button', class: cls, 'data-action': action,
      onclick: () => (question ? act(question, label, 'POST', path + '/' + action, again)
        : run('POST', path + '/' + action, again)) }, label);
    const render = (r) => {
      const live = ROLLOUT_LIVE.includes(r.state) || n(r.counts, ...IN_FLIGHT) > 0;
      const head = el('h1', {}, 'Rollout ', el('span', { class: 'mono' }, r.id), ' ',
        el('span', { 'data-test': 'rollout-state' }, jobBadge(r.state)),
        live ? el('span', { class: 'live' }, ' · live') : null);
      const target = el('p', {}, 'to ', el('span', { class: 'mono wrap', 'data-test': 'rollout-image' }, rolloutTarget(r)));
      const sel = r.selector || {};
      const selText = Object.keys(sel).sort().map((k) => k + ': ' +
        (Array.isArray(sel[k]) ? sel[k].join(', ') : String(sel[k]))).join('; ') || 'every instance';
      const allowed = Array.isArray(r.actions) ? r.actions : [];
      const actions = el('div', { class: 'actions' },
        allowed.includes('pause') ? button('pause', 'Pause', 'quiet') : null,
        allowed.includes('resume') ? button('resume', 'Resume', '', 'Resume rollout ' + r.id + ' to ' + rolloutTarget(r) +
          '? Its next steps start.') : null,
        allowed.includes('abort') ? button('abort', 'Abort', 'danger', 'Abort rollout ' + r.id +
          '? Nothing more starts; the instances already changed keep ' + rolloutTarget(r) + '.') : null,
        allowed.includes('rollback') ? button('rollback', 'Roll back', 'danger', 'Roll back rollout ' + r.id +
          '? Every instance it changed goes back to its previous image, in waves.') : null);
      const cards = el('div', { class: 'cards' },
        el('section', { class: 'card' }, el('h2', {}, 'Rollout'), kv([
          ['Selector', selText],
          ['Waves', Array.isArray(r.waves) ? r.waves.join(', ') : r.waves], ['Parallel', r.parallel],
          ['Pause between waves', r.pause_seconds ? r.pause_seconds + ' s' : 'none'],
          ['Roll back a failed one', r.rollback_on_failure ? 'at once' : 'no'],
          ['New instances', r.apply_to_new ? 'get the image' : 'keep the setting']])),
        el('section', { class: 'card' }, el('h2', {}, 'Progress'), progress(r.counts, r.total), kv([
          ['Wave', r.wave + ' of ' + (r.wave_progress || []).length],
          ['Failure budget', budget(r.failures, r.failure_budget)],
          ['Next wave', r.next_wave_at && r.state === 'running' ? when(r.next_wave_at) : null],
          ['Created', when(r.created_at)], ['Updated', when(r.updated_at)], ['Finished', when(r.finished_at)]])));

      const waves = (r.wave_progress || []).map((w) => el('tr', { 'data-wave': w.wave, 'data-state': w.state },
        el('td', {}, text(w.wave)), el('td', {}, badge(w.state)), el('td', {}, text(w.size)),
        el('td', {}, progress(w.counts, w.size)),
        el('td', { class: 'muted' }, STEP_STATES.filter((s) => n(w.counts, s)).map((s) => s + ' ' + w.counts[s]).join(' · '))));
      const waveTable = el('div', { class: 'table-wrap' }, el('table', { id: 'rollout-waves' },
        el('thead', {}, el('tr', {}, el('th', {}, 'Wave'), el('th', {}, 'State'), el('th', {}, 'Size'),
          el('th', {}, 'Progress'), el('th', {}, 'Steps'))),
        el('tbody', {}, waves)));

      const chips = el('div', { class: 'chips', 'data-test': 'step-counts' },
        el('a', { class: 'chip' + (filter ? '' : ' on'), href: '#/rollout/' + encodeURIComponent(r.id) }, 'all ' + text(r.total)),
        STEP_STATES.filter((s) => n(r.counts, s)).map((s) => el('a', { class: 'chip' + (filter === s ? ' on' : ''),
          'data-state': s, href: '#/rollout/' + encodeURIComponent(r.id) + '?state=' + encodeURIComponent(s) },
        s + ' ' + r.counts[s])));
      const list = (r.instances || []).filter((e) => !filter || e.state === filter);
      const rows = list.slice(0, SHOWN).map((e) => {
        const back = BACK.includes(e.state);
        return el('tr', { 'data-sub': e.subscription_id, 'data-state': e.state },
          el('td', {}, el('a', { href: '#/instance/' + encodeURIComponent(e.subscription_id) }, e.subscription_id)),
          el('td', {}, text(e.wave)),
          el('td', {}, badge(e.state)),
          el('td', { class: 'mono wrap' }, text(e.previous_image)),
          el('td', { class: 'mono wrap' }, back ? [text(e.previous_image), el('div', { class: 'muted' }, '(rollback)')]
            : e.state === 'skipped' || e.state === 'unchanged' ? '—' : rolloutTarget(r)),
          // a failure's error, or why a step was skipped or waits (not an error)
          el('td', { class: ['failed', 'rollback_failed'].includes(e.state) ? 'err' : 'muted wrap', 'data-test': 'step-error' },
            e.error || ''),
          el('td', {}, e.job_id ? el('a', { class: 'mono', href: '#/job/' + encodeURIComponent(e.job_id) }, e.job_id) : '—'),
          el('td', { class: 'hide-narrow' }, when(e.started_at), el('div', { class: 'muted' }, e.finished_at ? when(e.finished_at) : '')));
      });
      const steps = el('div', { class: 'table-wrap' }, rows.length ? el('table', { id: 'rollout-instances' },
        el('thead', {}, el('tr', {}, el('th', {}, 'Subscription'), el('th', {}, 'Wave'), el('th', {}, 'State'),
          el('th', {}, 'Previous image'), el('th', {}, 'Target image'), el('th', {}, 'Error / reason'), el('th', {}, 'Job'),
          el('th', { class: 'hide-narrow' }, 'Started / finished'))),
        el('tbody', {}, rows)) : el('p', { class: 'empty' }, 'No instance in this state.'));
      box.replaceChildren(head, target,
        r.reason ? el('p', { class: r.state === 'halted' ? 'error' : 'muted', 'data-test': 'rollout-reason' }, r.reason) : '',
        actions, cards, el('h2', {}, 'Waves'), waveTable, el('h2', {}, 'Instances'), chips, steps,
        list.length > SHOWN ? el('p', { class: 'muted' }, 'Showing ' + SHOWN + ' of ' + list.length +
          '; pick a state above to narrow the list.') : '');
      return live;
    };
    const poll = async () => {
      if (gen !== generation) return;
      const mine = ++seq;
      let r;
      try {
        r = await api('GET', path);
      } catch (e) {
        if (!box.firstChild) throw e;
        box.append(el('p', { class: 'error' }, e.message));
        return;
      }
      if (gen !== generation || mine !== seq) return;
      if (!render(r)) return;
      const sig = r.state + '/' + r.updated_at + '/' + STEP_STATES.map((s) => n(r.counts, s)).join(',');
      delay = sig !== lastSig ? 1000 : Math.min(delay * 1.5, 8000);
      lastSig = sig;
      clearTimeout(timer);
      timer = setTimeout(poll, delay);
    };
    await poll();
    out.append(box);
  }

  // ---- Health ------------------------------------------------------------
  async function healthPage(out) {
    const [sys, rec, hosts] = await Promise.all([
      api('GET', '/api/v1/system'),
      api('GET', '/api/v1/reconcile').catch((e) => ({ error: e.message })),
      // GET /api/v1/hosts exists once mrprov knows several Dokku hosts
      api('GET', '/api/v1/hosts').catch(() => null)]);
    out.append(el('h1', {}, 'Health ', badge(sys.ready ? 'ok' : 'failed', 'ready')));
    if (sys.reasons.length) out.append(el('ul', { class: 'error' }, sys.reasons.map((r) => el('li', {}, r))));
    const lr = sys.config.last_reload;
    const dokku = el('section', { class: 'card', 'data-test': 'dokku' }, el('h2', {}, 'Dokku'),
      kv([['Mode', sys.dokku.mode], ['State', badge(sys.dokku.state)], ['Error', sys.dokku.error]]));
    if (hosts && Array.isArray(hosts.hosts)) {
      for (const h of hosts.hosts) {
        dokku.append(el('h2', {}, text(h.name || h.host)), kv(Object.keys(h).filter((k) => typeof h[k] !== 'object' || h[k] === null)
          .map((k) => [k, h[k]])));
      }
    }
    const ob = sys.supabase.outbox || {};
    out.append(el('div', { class: 'cards' },
      dokku,
      el('section', { class: 'card', 'data-test': 'supabase' }, el('h2', {}, 'Supabase'), kv([
        ['Configured', sys.supabase.configured ? 'yes' : 'no'], ['State', badge(sys.supabase.state)],
        ['Error', sys.supabase.error], ['Outbox pending', ob.pending], ['Outbox parked', ob.parked],
        ['Oldest pending', when(ob.oldest_pending_at)]])),
      el('section', { class: 'card', 'data-test': 'config' }, el('h2', {}, 'Configuration'), kv([
        ['Generation', sys.config.generation], ['Last reload', lr.at ? when(lr.at) : 'none since start'],
        ['Outcome', badge(lr.outcome)], ['Error', lr.error ? el('span', { class: 'error' }, lr.error) : null],
        ['Version', sys.version]]),
      el('div', { class: 'actions' }, el('button', { type: 'button', class: 'danger', 'data-action': 'reload',
        onclick: () => act('Reload tiers, profiles, hooks and Lua scripts now (as SIGHUP does)?', 'Reload', 'POST', '/api/v1/reload', route) }, 'Reload now'))),
      el('section', { class: 'card', 'data-test': 'reconcile' }, el('h2', {}, 'Reconcile'),
        rec.error ? el('p', { class: 'error' }, rec.error) : kv([
          ['Last sweep', rec.state === 'none' ? rec.message : badge(rec.state)], ['Mode', rec.mode],
          ['Finished', when(rec.finished_at)], ['Checked', rec.instances_checked], ['Drifted', rec.drifted_count],
          ['Orphans', rec.orphans_count], ['Errors', rec.errors_count],
          ['Running now', rec.running ? 'yes (' + rec.running.job_id + ')' : 'no']]),
        el('div', { class: 'actions' }, el('button', { type: 'button', class: 'danger', 'data-action': 'reconcile',
          onclick: () => act('Start a drift sweep over every instance now?', 'Reconcile', 'POST', '/api/v1/reconcile', route) }, 'Reconcile now')))));
  }

  // ---- Start -------------------------------------------------------------
  document.getElementById('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault(); // never a form submission: the key stays out of every URL
    const v = document.getElementById('key-input').value.trim();
    if (!v) return;
    sessionStorage.setItem(KEY, v);
    document.getElementById('key-input').value = '';
    document.getElementById('key-dialog').close();
    updateKeyButton();
    keyDone(true);
  });
  document.getElementById('key-cancel').addEventListener('click', () => {
    document.getElementById('key-dialog').close();
    keyDone(false);
  });
  document.getElementById('key-dialog').addEventListener('cancel', () => keyDone(false));
  document.getElementById('confirm-cancel').addEventListener('click', () => document.getElementById('confirm-dialog').close(''));
  document.getElementById('confirm-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    document.getElementById('confirm-dialog').close('ok');
  });
  document.getElementById('key-button').addEventListener('click', () => {
    if (getKey()) {
      sessionStorage.removeItem(KEY);
      updateKeyButton();
      route();
    } else {
      askKey('').then((ok) => { if (ok) route(); });
    }
  });
  window.addEventListener('hashchange', route);
  updateKeyButton();
  route();
})();
