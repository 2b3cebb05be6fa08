'use strict';
// The citizen's page: the open and upcoming batches of the current seasons, their terms in plain
// words, where they can be used, the stock left, and a countdown to each opening on the
// server's clock; sign-up and sign-in with a one-time code; claiming (one Idempotency-Key per
// intent, kept in sessionStorage until answered); the citizen's vouchers and a voucher's QR code.
//
// The citizen's token is kept in localStorage ('wenhui.citizen'): on their own phone a citizen
// stays signed in for the token's 30 days; 退出登录 ends the session on the server and forgets it.
(() => {
  const { el, plain, isZero, cst, countdown } = wenhui;
  const main = document.getElementById('batches');
  const $ = (id) => document.getElementById(id);
  const SESSION = 'wenhui.citizen';
  const INTENT = 'wenhui.claim.';
  let batchesById = new Map();
  let namesCache = null;

  // 满100减30, 无门槛减5; 8折 最高减50 (percent is the share taken off: 20 → 8折).
  const terms = (batch) => {
    if (batch.kind === 'threshold') {
      return isZero(batch.min_spend)
        ? `无门槛减${plain(batch.face_value)}`
        : `满${plain(batch.min_spend)}减${plain(batch.face_value)}`;
    }
    const rest = 100 - batch.percent;
    const zhe = rest === 0 ? '免单' : `${Math.floor(rest / 10)}${rest % 10 ? `.${rest % 10}` : ''}折`;
    return `${zhe} 最高减${plain(batch.cap)}`;
  };
  const condition = (batch) => {
    if (batch.kind === 'threshold') return isZero(batch.min_spend) ? '任意金额可用' : `消费满${plain(batch.min_spend)}元可用`;
    const floor = isZero(batch.min_spend) ? '任意金额可用' : `满${plain(batch.min_spend)}元可用`;
    return `${floor}，按${plain(batch.step)}元取整`;
  };

  const where = (batch, names) => {
    const region = names.regions[batch.issuer] || batch.issuer;
    const area = batch.issuer.endsWith('0000') ? `${region}内通用` : `限${region}`;
    const categories = batch.categories.map((c) => names.categories[c] || c).join('、');
    return `${area} · ${categories}`;
  };

  // What the batch is doing now: counting down to its opening, open, or given by lottery.
  const state = (batch) => {
    const opens = Date.parse(batch.claim_opens_at);
    const closes = Date.parse(batch.claim_closes_at);
    if (batch.lottery) {
      return el('p', { class: 'state' }, `抽签发放 · ${cst(closes)} 截止报名`);
    }
    if (wenhui.now() < opens) {
      return el('p', { class: 'state soon' },
        el('span', { class: 'countdown', 'data-opens-at': opens }, `距开抢 ${countdown(opens - wenhui.now())}`),
        el('span', { class: 'when' }, `${cst(opens)} 开抢`));
    }
    if (batch.remaining <= 0) {
      const next = batch.next_release_at ? `，${cst(Date.parse(batch.next_release_at))} 补放` : '';
      return el('p', { class: 'state out' }, `已领完${next}`);
    }
    return el('p', { class: 'state open' }, `正在领取 · ${cst(closes)} 截止`);
  };

  // Before the opening nothing is released yet: the whole stock is what will be given.
  const stock = (batch) => (wenhui.now() < Date.parse(batch.claim_opens_at)
    ? el('p', { class: 'stock' }, '共 ', el('strong', {}, String(batch.stock)), ' 张')
    : el('p', { class: 'stock' }, '剩余 ', el('strong', {}, String(Math.max(0, batch.remaining))), ` 张 / 共 ${batch.stock} 张`));

  const card = (batch, names) => el('article', { class: 'batch', 'data-batch-id': batch.id },
    el('div', { class: 'terms' }, terms(batch)),
    el('h3', {}, batch.name),
    el('p', { class: 'condition' }, condition(batch)),
    el('p', { class: 'where' }, where(batch, names)),
    stock(batch),
    batch.points_price ? el('p', { class: 'points' }, `也可用 ${batch.points_price} 积分兑换`) : null,
    state(batch),
    batch.lottery ? null : claimRow(batch));

  const season = (item, batches, names) => el('section', { class: 'season', 'data-season-id': item.id },
    el('h2', {}, item.name),
    el('p', { class: 'note' }, `${names.regions[item.province] || item.province} · ${cst(Date.parse(item.starts_at))} 至 ${cst(Date.parse(item.ends_at))}`),
    batches.length ? batches.map((b) => card(b, names)) : el('p', { class: 'note' }, '这一期暂时没有可领的券。'));

  // Each second, on the server's clock: the countdowns move, and an opening turns its batch open.
  const tick = () => {
    for (const node of main.querySelectorAll('.countdown')) {
      const left = Number(node.dataset.opensAt) - wenhui.now();
      if (left > 0) {
        const text = `距开抢 ${countdown(left)}`;
        if (node.textContent !== text) node.textContent = text;
      } else {
        const line = node.parentElement;
        line.className = 'state open';
        line.textContent = '正在领取';
        reload();
      }
    }
    // The claim button is live at the opening second (server time), before the list reloads.
    for (const button of main.querySelectorAll('button.claim[data-opens-at]')) {
      if (Number(button.dataset.opensAt) <= wenhui.now() && button.dataset.busy !== '1') {
        button.removeAttribute('data-opens-at');
        button.disabled = false;
        button.textContent = '立即领取';
      }
    }
  };

  // The lists carry ETags: the browser's cache answers a poll within a second and revalidates
  // after (304 when unchanged). After an opening, `fresh` revalidates at once: a list cached
  // before the opening would show the batch sold out.
  const load = async (fresh = false) => {
    const cache = fresh ? 'no-cache' : 'default';
    const [names, page] = await Promise.all([wenhui.names(), wenhui.api('/v1/seasons', { cache })]);
    namesCache = names;
    const current = page.seasons.filter((s) => s.status === 'open' || s.status === 'scheduled');
    const batches = await Promise.all(current.map((s) => wenhui.api(`/v1/seasons/${s.id}/batches`, { cache })));
    const listed = batches.flat();
    if (listed.length) wenhui.observe(listed[0].server_time);
    batchesById = new Map(batches.flat().map((b) => [b.id, b]));
    main.replaceChildren(...(current.length
      ? current.map((s, i) => season(s, batches[i], names))
      : [el('p', { class: 'note' }, '现在没有进行中的活动。')]));
  };

  // An opening passed: the stock released at it is read again, once, a moment later.
  let reloading = false;
  const reload = () => {
    if (reloading) return;
    reloading = true;
    setTimeout(() => load(true).catch(() => {}).finally(() => { reloading = false; }), 1000);
  };

  // ---- The citizen's session -------------------------------------------------------------
  const session = () => {
    try {
      const saved = JSON.parse(localStorage.getItem(SESSION) || 'null');
      return saved && saved.token && Date.parse(saved.token_expires_at) > wenhui.now() ? saved : null;
    } catch (_) {
      return null;
    }
  };
  const forget = () => localStorage.removeItem(SESSION);
  // A call as the citizen; a 401 means the session is gone: forget it and ask to sign in.
  const asCitizen = async (path, options = {}) => {
    const saved = session();
    if (!saved) {
      show('account');
      throw new wenhui.ApiError(401, 'unauthenticated', '请先登录。');
    }
    try {
      return await wenhui.api(path, { ...options, key: saved.token });
    } catch (error) {
      if (error.status === 401) {
        forget();
        refreshHeader();
        show('account');
      }
      throw error;
    }
  };

  // ---- Views: one at a time ----------------------------------------------------------------
  const views = { batches: main, account: $('account'), mine: $('mine') };
  const show = (name) => {
    for (const [key, node] of Object.entries(views)) node.hidden = key !== name;
    for (const tab of document.querySelectorAll('.tabs button')) {
      tab.setAttribute('aria-current', tab.id === `to-${name}` ? 'page' : 'false');
    }
    if (name === 'mine') loadMine().catch(showMineError);
    if (name === 'account') refreshAccount();
  };
  const refreshHeader = () => {
    $('to-account').textContent = session() ? '账户' : '登录';
  };
  const refreshAccount = () => {
    const saved = session();
    $('auth').hidden = Boolean(saved);
    $('signed-in').hidden = !saved;
    if (saved) $('who').textContent = `已登录：${saved.phone_masked || ''}`;
  };

  // ---- Sign-up and sign-in -----------------------------------------------------------------
  const form = $('auth');
  const authError = (message) => {
    $('auth-error').textContent = message;
    $('auth-error').hidden = !message;
  };
  const setMode = (mode) => {
    form.dataset.mode = mode;
    const register = mode === 'register';
    for (const node of form.querySelectorAll('.register')) node.hidden = !register;
    $('name').required = register;
    $('auth-title').textContent = register ? '注册' : '登录';
    $('auth-submit').textContent = register ? '注册并登录' : '登录';
    $('switch-mode').textContent = register ? '已有账号？登录' : '还没有账号？注册';
    authError('');
  };
  $('switch-mode').addEventListener('click', () => setMode(form.dataset.mode === 'register' ? 'sign_in' : 'register'));
  $('send-code').addEventListener('click', async () => {
    const button = $('send-code');
    authError('');
    button.disabled = true;
    try {
      const purpose = form.dataset.mode === 'register' ? 'register' : 'sign_in';
      const sent = await wenhui.api('/v1/citizens/codes', { method: 'POST', body: { phone: $('phone').value.trim(), purpose } });
      $('code-sent').textContent = '验证码已发送，5分钟内有效。';
      let wait = Number(sent.resend_after_s) || 60;
      const timer = setInterval(() => {
        wait -= 1;
        button.textContent = wait > 0 ? `${wait}秒后重发` : '获取验证码';
        if (wait <= 0) {
          clearInterval(timer);
          button.disabled = false;
        }
      }, 1000);
    } catch (error) {
      authError(error.message);
      button.disabled = false;
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    authError('');
    const register = form.dataset.mode === 'register';
    const body = { phone: $('phone').value.trim(), id_number: $('id-number').value.trim(), code: $('code').value.trim() };
    if (register) body.name = $('name').value.trim();
    $('auth-submit').disabled = true;
    try {
      const answer = await wenhui.api(register ? '/v1/citizens' : '/v1/citizens/sessions', { method: 'POST', body });
      const phone = body.phone.replace(/\D/g, '').slice(-11);
      const phoneMasked = `${phone.slice(0, 3)}****${phone.slice(-4)}`;
      localStorage.setItem(SESSION, JSON.stringify({ ...answer, phone_masked: phoneMasked }));
      form.reset();
      refreshHeader();
      show('batches');
    } catch (error) {
      authError(error.message);
    } finally {
      $('auth-submit').disabled = false;
    }
  });
  $('sign-out').addEventListener('click', async () => {
    const saved = session();
    if (saved) await wenhui.api('/v1/me/session', { method: 'DELETE', key: saved.token }).catch(() => {});
    forget();
    refreshHeader();
    refreshAccount();
  });

  // ---- Claiming ----------------------------------------------------------------------------
  // The button of a batch: disabled with its opening time until the opening second.
  function claimRow(batch) {
    const opens = Date.parse(batch.claim_opens_at);
    const before = wenhui.now() < opens;
    const out = !before && batch.remaining <= 0;
    // An intent still waiting for its answer (the list was read again meanwhile) stays busy.
    const pending = !before && session() && sessionStorage.getItem(INTENT + batch.id);
    const button = el('button', { type: 'button', class: 'claim', 'data-batch-id': batch.id, disabled: before || out || pending,
      'data-opens-at': before ? opens : null, 'data-busy': pending ? '1' : null },
    pending ? '正在领取…' : before ? '未开抢' : out ? '已领完' : '立即领取');
    button.addEventListener('click', () => claim(batch.id, button));
    return el('div', { class: 'claim-row' }, button, el('p', { class: 'claim-message', role: 'alert', hidden: true }));
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const buttonOf = (batchId) => main.querySelector(`button.claim[data-batch-id="${batchId}"]`);
  const say = (batchId, text, kind) => {
    const line = buttonOf(batchId) && buttonOf(batchId).parentElement.querySelector('.claim-message');
    if (!line) return;
    line.textContent = text;
    line.className = `claim-message ${kind}`;
    line.hidden = !text;
  };
  // One intent, one Idempotency-Key, kept in sessionStorage until the server answers: a retry
  // (after a 429 or a lost connection) or a reload re-sends the same key, so it gives one voucher.
  const claim = async (batchId, button) => {
    if (!session()) {
      show('account');
      return;
    }
    if (button && button.dataset.busy === '1') return;
    let key = sessionStorage.getItem(INTENT + batchId);
    if (!key) {
      key = wenhui.randomKey();
      sessionStorage.setItem(INTENT + batchId, key);
    }
    const current = () => buttonOf(batchId);
    const busy = (on, text) => {
      const b = current();
      if (!b) return;
      b.dataset.busy = on ? '1' : '';
      b.disabled = on;
      if (text) b.textContent = text;
    };
    busy(true, '正在领取…');
    say(batchId, '', '');
    for (let attempt = 0; attempt < 20; attempt += 1) {
      try {
        await asCitizen(`/v1/batches/${batchId}/claims`, { method: 'POST', body: {}, idempotencyKey: key });
        sessionStorage.removeItem(INTENT + batchId);
        busy(true, '已领取');
        say(batchId, '领取成功，可在“我的券”中查看。', 'ok');
        return;
      } catch (error) {
        if (error.status === 429 || error.status === 0 || error.status >= 500) {
          const wait = error.retryAfter ? error.retryAfter * 1000 : 1000 + attempt * 500;
          say(batchId, `排队中，${Math.ceil(wait / 1000)}秒后自动重试…`, 'wait');
          await sleep(wait);
          continue;
        }
        if (error.status !== 401) sessionStorage.removeItem(INTENT + batchId);
        busy(false, '立即领取');
        say(batchId, error.message, 'refused');
        return;
      }
    }
    busy(false, '立即领取');
    say(batchId, '网络繁忙，请稍后再点一次（不会重复领取）。', 'refused');
  };
  // Intents a reload interrupted: sent again with their own keys.
  const resumeIntents = () => {
    if (!session()) return;
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const name = sessionStorage.key(i);
      if (name && name.startsWith(INTENT)) claim(name.slice(INTENT.length), null);
    }
  };

  // ---- My vouchers and the QR code ---------------------------------------------------------
  const STATUS = { active: '可使用', used: '已使用', expired: '已过期', forfeited: '已作废' };
  const mine = views.mine;
  const showMineError = (error) => mine.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
  const voucherCard = (voucher) => {
    const batch = batchesById.get(voucher.batch_id);
    const active = voucher.status === 'active';
    const node = el(active ? 'button' : 'article', { class: `voucher ${voucher.status}`, type: active ? 'button' : null,
      'data-voucher-id': voucher.id },
      el('span', { class: 'terms' }, terms(voucher)),
      el('span', { class: 'name' }, voucher.batch_name),
      el('span', { class: 'condition' }, condition(voucher)),
      batch && namesCache ? el('span', { class: 'where' }, where(batch, namesCache)) : null,
      el('span', { class: 'status' }, STATUS[voucher.status] || voucher.status,
        el('span', { class: 'expires' }, `${cst(Date.parse(voucher.expires_at))} 到期`)),
      active ? el('span', { class: 'open-qr' }, '点击出示二维码') : null);
    if (active) node.addEventListener('click', () => openQr(voucher));
    return node;
  };
  async function loadMine() {
    if (!session()) {
      show('account');
      return;
    }
    mine.replaceChildren(el('p', { class: 'note' }, '正在加载我的券…'));
    const page = await asCitizen('/v1/me/vouchers');
    mine.replaceChildren(el('h2', {}, '我的券'), ...(page.vouchers.length
      ? page.vouchers.map(voucherCard)
      : [el('p', { class: 'note' }, '还没有领到券。')]));
  }

  // The QR code full screen, renewed before it expires without a tap.
  let qrTimer = null;
  const qr = $('qr');
  const closeQr = () => {
    clearTimeout(qrTimer);
    qrTimer = null;
    qr.hidden = true;
    $('qr-image').removeAttribute('src');
    document.body.classList.remove('showing-qr');
  };
  const renewQr = async (voucher) => {
    try {
      const answer = await asCitizen(`/v1/vouchers/${voucher.id}/qr`, { method: 'POST', body: {} });
      if (qr.hidden) return;
      // The server's SVG as an image (CSP allows data: images; no markup enters the page).
      $('qr-image').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(answer.svg)}`;
      qr.dataset.token = answer.token;
      const left = Date.parse(answer.expires_at) - wenhui.now();
      $('qr-state').textContent = '二维码会自动刷新，无需操作';
      qrTimer = setTimeout(() => renewQr(voucher), Math.max(3000, left - 15000));
    } catch (error) {
      if (qr.hidden) return;
      $('qr-state').textContent = error.message;
      if (error.status === 429 || error.status === 0 || error.status >= 500) {
        qrTimer = setTimeout(() => renewQr(voucher), (error.retryAfter || 3) * 1000);
      }
    }
  };
  function openQr(voucher) {
    $('qr-title').textContent = terms(voucher);
    $('qr-name').textContent = `${voucher.batch_name} · ${cst(Date.parse(voucher.expires_at))} 到期`;
    $('qr-state').textContent = '正在生成二维码…';
    qr.hidden = false;
    document.body.classList.add('showing-qr');
    renewQr(voucher);
  }
  $('qr-close').addEventListener('click', closeQr);

  $('to-batches').addEventListener('click', () => show('batches'));
  $('to-mine').addEventListener('click', () => show('mine'));
  $('to-account').addEventListener('click', () => show('account'));

  setMode('sign_in');
  refreshHeader();
  show('batches');
  setInterval(tick, 200);
  load()
    .then(resumeIntents)
    .catch((error) => main.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message || '出错了，请稍后再试。')))
    .finally(() => main.removeAttribute('aria-busy'));
})();
