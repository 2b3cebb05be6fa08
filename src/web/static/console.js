'use strict';
// The finance console's shell: sign-in with a staff key (checked against GET /v1/staff/me and
// kept in this tab's session storage only, sent as a bearer token), a nav of sections, and a
// season picker. The sections live in their own files (console-money.js, console-admin.js) and
// register here:
//
//   wenhui.console.section(name, title, render, { needs, season })
//
// `needs` is the capability (GET /v1/staff/me's `may`) without which the section is not offered;
// `season: false` for a section that does not need a season picked. `render(view, ctx)` fills
// `view` (a fresh element; a section switched away from keeps writing into a detached one):
// ctx = { key, me, names, season, api, file, write, may, refresh }. `wenhui.console.may(action)`
// says whether the key may do `action`: the console never offers what the role cannot do.
wenhui.console = (() => {
  const { el } = wenhui;
  const STORE = 'wenhui.staffKey';
  const SEASON = 'wenhui.console.season';
  const INTENT = 'wenhui.console.intent.';
  const sections = [];
  let state = null; // { key, me, names, seasons }
  let current = null;

  const form = document.getElementById('sign-in');
  const input = document.getElementById('staff-key');
  const error = document.getElementById('sign-in-error');
  const who = document.getElementById('who');
  const nav = document.getElementById('sections');
  const picker = document.getElementById('season-picker');
  const select = document.getElementById('season');
  const view = document.getElementById('view');

  const may = (action) => Boolean(state && Array.isArray(state.me.may) && state.me.may.includes(action));
  const offered = () => sections.filter((s) => !s.needs || may(s.needs));

  const api = (path, options = {}) => wenhui.api(path, { ...options, key: state.key });

  // A file the API serves (CSV, SVG) fetched with the key: its Blob, or an ApiError.
  const file = async (path) => {
    let response;
    try {
      response = await fetch(path, { headers: { Authorization: `Bearer ${state.key}` } });
    } catch (_) {
      throw new wenhui.ApiError(0, 'network', '网络不通，请检查网络后重试。');
    }
    if (!response.ok) {
      let code = 'internal';
      try {
        code = (await response.json()).error.code || code;
      } catch (_) {
        /* not JSON: the generic message */
      }
      throw new wenhui.ApiError(response.status, code, await wenhui.messageFor(code));
    }
    return response.blob();
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A write the user meant once (`intent` names it, e.g. 'settle:<season>'): one Idempotency-Key
  // per intent, kept in sessionStorage until the server answers, so a retry (429, a lost
  // connection) or a reload sends the same key and the write happens once.
  const write = async (intent, path, { method = 'POST', body = {} } = {}) => {
    let idempotencyKey = sessionStorage.getItem(INTENT + intent);
    if (!idempotencyKey) {
      idempotencyKey = wenhui.randomKey();
      sessionStorage.setItem(INTENT + intent, idempotencyKey);
    }
    for (let attempt = 0; ; attempt += 1) {
      try {
        const answer = await api(path, { method, body, idempotencyKey });
        sessionStorage.removeItem(INTENT + intent);
        return answer;
      } catch (failure) {
        const transient = failure.status === 429 || failure.status === 0 || failure.status >= 500;
        if (transient && attempt < 5) {
          await sleep(failure.retryAfter ? failure.retryAfter * 1000 : 1000 + attempt * 500);
          continue;
        }
        if (!transient) sessionStorage.removeItem(INTENT + intent);
        throw failure;
      }
    }
  };

  const season = () => (state ? state.seasons.find((s) => s.id === select.value) || null : null);

  const drawNav = () => {
    nav.replaceChildren(
      ...offered().map((s) =>
        el('button', { type: 'button', 'data-section': s.name, 'aria-current': s.name === current ? 'page' : false }, s.title)));
  };

  // Shows section `name` (or the first offered) for the picked season.
  const show = async (name) => {
    const list = offered();
    const chosen = list.find((s) => s.name === name) || list[0];
    if (!chosen) {
      view.replaceChildren(el('p', { class: 'note' }, '这个密钥在控制台中没有可用的功能。'));
      return;
    }
    current = chosen.name;
    if (window.location.hash !== `#${current}`) window.history.replaceState(null, '', `#${current}`);
    drawNav();
    const pane = el('div', { class: 'pane', id: `section-${current}`, 'data-section': current, 'aria-busy': 'true' });
    view.replaceChildren(el('h2', {}, chosen.title), pane);
    const picked = season();
    if (chosen.season && !picked) {
      pane.append(el('p', { class: 'note' }, '本省还没有活动季。'));
      pane.removeAttribute('aria-busy');
      return;
    }
    const ctx = {
      key: state.key, me: state.me, names: state.names, season: picked, api, file, write, may,
      refresh: () => show(current),
    };
    try {
      await chosen.render(pane, ctx);
    } catch (failure) {
      pane.append(el('p', { class: 'error', role: 'alert' }, failure.message || String(failure)));
    }
    pane.removeAttribute('aria-busy');
  };

  const section = (name, title, render, { needs = null, season: seasonal = true } = {}) => {
    sections.push({ name, title, render, needs, season: seasonal });
    if (state) drawNav();
  };

  const STATUS = { scheduled: '未开始', open: '进行中', ended: '已结束', closed: '已结季' };

  // The seasons of the key's province, latest start first.
  const loadSeasons = async (key, me) => {
    const province = `${me.region.slice(0, 2)}0000`;
    const page = await wenhui.api('/v1/seasons?limit=100', { key });
    return page.seasons.filter((s) => s.province === province);
  };

  const signIn = async (key) => {
    error.hidden = true;
    try {
      const [me, names] = await Promise.all([wenhui.api('/v1/staff/me', { key }), wenhui.names()]);
      const seasons = await loadSeasons(key, me);
      sessionStorage.setItem(STORE, key);
      state = { key, me, names, seasons };
      form.hidden = true;
      const region = names.regions[me.region] || me.region;
      who.replaceChildren(
        el('span', { class: 'who' }, `${region}（${me.region}） · ${names.roles[me.role] || me.role}`),
        el('button', { type: 'button', id: 'sign-out' }, '退出'));
      who.hidden = false;
      const saved = sessionStorage.getItem(SEASON);
      select.replaceChildren(
        ...seasons.map((s) => el('option', { value: s.id }, `${s.name}（${STATUS[s.status] || s.status}）`)));
      if (seasons.some((s) => s.id === saved)) select.value = saved;
      picker.hidden = seasons.length === 0;
      nav.hidden = false;
      view.hidden = false;
      await show(window.location.hash.slice(1));
    } catch (failure) {
      sessionStorage.removeItem(STORE);
      state = null;
      error.textContent = failure.message;
      error.hidden = false;
      input.focus();
    }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) signIn(key);
  });
  who.addEventListener('click', (event) => {
    if (event.target.id !== 'sign-out') return;
    sessionStorage.clear();
    window.location.hash = '';
    window.location.reload();
  });
  nav.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-section]');
    if (button) show(button.dataset.section);
  });
  select.addEventListener('change', () => {
    sessionStorage.setItem(SEASON, select.value);
    show(current);
  });
  // Every section's script has run by now (deferred scripts run in order, before this event).
  document.addEventListener('DOMContentLoaded', () => {
    const saved = sessionStorage.getItem(STORE);
    if (saved) signIn(saved);
  });

  return { section, may, show };
})();
