'use strict';
// The citizen's page: the open and upcoming batches of the current seasons, their terms in plain
// words, where they can be used, the stock left, and a countdown to each opening on the
// server's clock; sign-up and sign-in with a one-time code; claiming (one Idempotency-Key per
// intent, kept in sessionStorage until answered); lottery batches (entering, and the result after
// the draw); waitlist batches (排队: joining with the phone to be texted, then the place in line);
// the citizen's vouchers and a voucher's QR code; the benefit card (文惠卡): taking it,
// its QR code, points and their expiry, and exchanging points for a voucher (keyed like a claim).
//
// The citizen's token is kept in localStorage ('wenhui.citizen'): on their own phone a citizen
// stays signed in for the token's 30 days; 退出登录 ends the session on the server and forgets it.
(() => {
  const { el, plain, isZero, cst, countdown } = wenhui;
  const main = document.getElementById('batches');
  const $ = (id) => document.getElementById(id);
  const SESSION = 'wenhui.citizen';
  const INTENT = 'wenhui.claim.';
  const EXCHANGE = 'wenhui.exchange.';
  let batchesById = new Map();
  let seasonsById = new Map();
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

  // Who pays the subsidy, when more than one government does: 青岛市、山东省共同出资.
  const funded = (batch, names) => {
    const funders = (batch.funding || []).filter((f) => f.share > 0).map((f) => names.regions[f.funder] || f.funder);
    return funders.length > 1 ? el('p', { class: 'funded' }, `${funders.join('、')}共同出资`) : null;
  };

  // What the batch is doing now: counting down to its opening, open, or given by lottery.
  const state = (batch) => {
    const opens = Date.parse(batch.claim_opens_at);
    const closes = Date.parse(batch.claim_closes_at);
    const waitlist = batch.lottery && batch.lottery.waitlist;
    const label = waitlist ? '距排队' : batch.lottery ? '距报名' : '距开抢';
    if (wenhui.now() < opens) {
      return el('p', { class: 'state soon' },
        el('span', { class: 'countdown', 'data-opens-at': opens, 'data-label': label }, `${label} ${countdown(opens - wenhui.now())}`),
        el('span', { class: 'when' }, `${cst(opens)} ${waitlist ? '开始排队' : batch.lottery ? '开始报名' : '开抢'}`));
    }
    if (waitlist) {
      if (batch.lottery.drawn_at) return el('p', { class: 'state' }, `已排定名次 · ${cst(Date.parse(batch.lottery.drawn_at))}`);
      return wenhui.now() < closes
        ? el('p', { class: 'state open' }, `排队中 · ${cst(closes)} 截止`)
        : el('p', { class: 'state' }, '排队已截止，等待排定名次');
    }
    if (batch.lottery) {
      if (batch.lottery.drawn_at) return el('p', { class: 'state' }, `已开奖 · ${cst(Date.parse(batch.lottery.drawn_at))}`);
      return wenhui.now() < closes
        ? el('p', { class: 'state open' }, `抽签报名中 · ${cst(closes)} 截止`)
        : el('p', { class: 'state' }, '报名已截止，等待开奖');
    }
    if (batch.remaining <= 0) {
      const next = batch.next_release_at ? `，${cst(Date.parse(batch.next_release_at))} 补放` : '';
      return el('p', { class: 'state out' }, `已领完${next}`);
    }
    return el('p', { class: 'state open' }, `正在领取 · ${cst(closes)} 截止`);
  };

  // Before the opening nothing is released yet: the whole stock is what will be given. A
  // lottery gives its whole stock by the draw.
  const stock = (batch) => (batch.lottery && batch.lottery.waitlist
    ? el('p', { class: 'stock' }, '共 ', el('strong', {}, String(batch.stock)), ' 张 · 按公开规则排定名次，先到不占先')
    : batch.lottery
    ? el('p', { class: 'stock' }, '共 ', el('strong', {}, String(batch.stock)), ' 张 · 报名后抽签发放')
    : wenhui.now() < Date.parse(batch.claim_opens_at)
    ? el('p', { class: 'stock' }, '共 ', el('strong', {}, String(batch.stock)), ' 张')
    : el('p', { class: 'stock' }, '剩余 ', el('strong', {}, String(Math.max(0, batch.remaining))), ` 张 / 共 ${batch.stock} 张`));

  const card = (batch, names) => el('article', { class: 'batch', 'data-batch-id': batch.id },
    el('div', { class: 'terms' }, terms(batch)),
    el('h3', {}, batch.name),
    el('p', { class: 'condition' }, condition(batch)),
    el('p', { class: 'where' }, where(batch, names)),
    funded(batch, names),
    stock(batch),
    batch.points_price ? el('p', { class: 'points' }, `也可用 ${batch.points_price} 积分兑换（见“文惠卡”）`) : null,
    state(batch),
    batch.lottery ? (batch.lottery.waitlist ? waitlistRow(batch) : lotteryRow(batch)) : claimRow(batch));

  const season = (item, batches, names) => el('section', { class: 'season', 'data-season-id': item.id },
    el('h2', {}, item.name),
    el('p', { class: 'note' }, `${names.regions[item.province] || item.province} · ${cst(Date.parse(item.starts_at))} 至 ${cst(Date.parse(item.ends_at))}`),
    batches.length ? batches.map((b) => card(b, names)) : el('p', { class: 'note' }, '这一期暂时没有可领的券。'));

  // Each second, on the server's clock: the countdowns move, and an opening turns its batch open.
  const tick = () => {
    for (const node of main.querySelectorAll('.countdown')) {
      const left = Number(node.dataset.opensAt) - wenhui.now();
      if (left > 0) {
        const text = `${node.dataset.label} ${countdown(left)}`;
        if (node.textContent !== text) node.textContent = text;
      } else {
        const line = node.parentElement;
        line.className = 'state open';
        line.textContent = { 距报名: '抽签报名中', 距排队: '排队中' }[node.dataset.label] || '正在领取';
        reload();
      }
    }
    for (const node of document.querySelectorAll('#mine .expires[data-expires-at]')) {
      const text = expiry({ status: 'active', expires_at: new Date(Number(node.dataset.expiresAt)).toISOString() });
      if (node.textContent !== text) node.textContent = text;
    }
    // The claim (or entry) button is live at the opening second (server time), before the list
    // reloads.
    for (const button of main.querySelectorAll('button[data-opens-at]')) {
      if (Number(button.dataset.opensAt) <= wenhui.now() && button.dataset.busy !== '1') {
        button.removeAttribute('data-opens-at');
        button.disabled = false;
        button.textContent = button.dataset.live || '立即领取';
      }
    }
  };

  // The lists carry ETags: the browser revalidates them (a 304 when unchanged); a CDN in front
  // answers most polls. The batch list says the server's time, taken when the page has none.
  const load = async () => {
    const [names, page] = await Promise.all([wenhui.names(), wenhui.api('/v1/seasons')]);
    namesCache = names;
    seasonsById = new Map(page.seasons.map((s) => [s.id, s]));
    const current = page.seasons.filter((s) => s.status === 'open' || s.status === 'scheduled');
    const batches = await Promise.all(current.map((s) => wenhui.api(`/v1/seasons/${s.id}/batches`)));
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
    setTimeout(() => load().catch(() => {}).finally(() => { reloading = false; }), 1000);
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
  const views = { batches: main, account: $('account'), mine: $('mine'), card: $('card') };
  const show = (name) => {
    for (const [key, node] of Object.entries(views)) node.hidden = key !== name;
    for (const tab of document.querySelectorAll('.tabs button')) {
      tab.setAttribute('aria-current', tab.id === `to-${name}` ? 'page' : 'false');
    }
    if (name === 'mine') loadMine().catch(showMineError);
    if (name === 'card') loadCard().catch(showCardError);
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
  // A retried call: a 429 waits its Retry-After, a lost connection or a 5xx a growing moment,
  // and the same request goes again (`wait(ms)` says so first). Other refusals are thrown.
  const RETRY_ATTEMPTS = 20;
  const retrying = async (call, wait) => {
    for (let attempt = 0; attempt < RETRY_ATTEMPTS; attempt += 1) {
      try {
        return await call();
      } catch (error) {
        if (error.status === 429 || error.status === 0 || error.status >= 500) {
          const ms = error.retryAfter ? error.retryAfter * 1000 : 1000 + attempt * 500;
          wait(ms);
          await sleep(ms);
          continue;
        }
        throw error;
      }
    }
    throw new wenhui.ApiError(0, 'busy', '网络繁忙，请稍后再点一次（不会重复领取）。');
  };
  // One intent, one Idempotency-Key, kept in sessionStorage (under `name`) until the server
  // answers: a retry (after a 429 or a lost connection) or a reload re-sends the same key, so the
  // intent gives one voucher. A refusal ends the intent (a 401 keeps it for after sign-in).
  const keptIntent = async (name, call, wait) => {
    let key = sessionStorage.getItem(name);
    if (!key) {
      key = wenhui.randomKey();
      sessionStorage.setItem(name, key);
    }
    try {
      const answer = await retrying(() => call(key), wait);
      sessionStorage.removeItem(name);
      return answer;
    } catch (error) {
      if (error.status !== 401 && error.code !== 'busy') sessionStorage.removeItem(name);
      throw error;
    }
  };
  const claim = async (batchId, button) => {
    if (!session()) {
      show('account');
      return;
    }
    if (button && button.dataset.busy === '1') return;
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
    try {
      await keptIntent(INTENT + batchId,
        (key) => asCitizen(`/v1/batches/${batchId}/claims`, { method: 'POST', body: {}, idempotencyKey: key }),
        (ms) => say(batchId, `排队中，${Math.ceil(ms / 1000)}秒后自动重试…`, 'wait'));
      busy(true, '已领取');
      say(batchId, '领取成功，可在“我的券”中查看。', 'ok');
      stockLeft(batchId, (n) => n - 1);
    } catch (error) {
      if (error.code === 'sold_out') {
        busy(true, '已领完');
        stockLeft(batchId, () => 0);
      } else {
        busy(false, '立即领取');
      }
      say(batchId, error.message, 'refused');
    }
  };
  // The stock shown under a batch, moved by what a claim learnt (the list is read again later).
  const stockLeft = (batchId, change) => {
    const count = main.querySelector(`article.batch[data-batch-id="${batchId}"] .stock strong`);
    const batch = batchesById.get(batchId);
    if (!count || !batch || wenhui.now() < Date.parse(batch.claim_opens_at)) return;
    const left = Math.max(0, change(Number(count.textContent)));
    count.textContent = String(left);
    const line = count.closest('article.batch').querySelector('.state');
    if (left === 0 && line) {
      line.className = 'state out';
      line.textContent = '已领完';
    }
  };
  // Intents a reload interrupted: sent again with their own keys.
  const resumeIntents = () => {
    if (!session()) return;
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const name = sessionStorage.key(i);
      if (name && name.startsWith(INTENT)) claim(name.slice(INTENT.length), null);
    }
  };

  // ---- Lotteries ----------------------------------------------------------------------------
  // Entering is once per citizen on the server (entering again answers the same), so it needs no
  // key. The batches a citizen entered are remembered on this phone, so that their results stay
  // listed under “我的券” once the batch has left the list of open batches.
  const LOTTERIES = 'wenhui.lottery.';
  const enteredKey = () => LOTTERIES + ((session() || {}).citizen_id || '');
  const entered = () => {
    try {
      return JSON.parse(localStorage.getItem(enteredKey()) || '[]');
    } catch (_) {
      return [];
    }
  };
  const rememberEntry = (batchId) => {
    const ids = entered();
    if (!ids.includes(batchId)) localStorage.setItem(enteredKey(), JSON.stringify([batchId, ...ids].slice(0, 50)));
  };
  const standing = (batchId) => asCitizen(`/v1/batches/${batchId}/entries/me`);
  const RESULT = {
    pending: ['已报名，等待开奖', 'ok'],
    won: ['恭喜中签！券已放入“我的券”。', 'ok'],
    lost: ['很遗憾，这次没有中签。', 'refused'],
  };
  const resultText = (entry, batch) => {
    if (entry.result === 'pending' && batch) return `已报名，${cst(Date.parse(batch.claim_closes_at))} 后开奖`;
    return (RESULT[entry.result] || ['', ''])[0];
  };
  // The row under a lottery batch: 参加抽签, then what became of the entry.
  const showStanding = (row, entry, batch) => {
    const button = row.querySelector('button.enter');
    const line = row.querySelector('.claim-message');
    if (entry.result === 'not_entered') return;
    rememberEntry(entry.batch_id);
    button.hidden = true;
    line.textContent = resultText(entry, batch);
    line.className = `claim-message ${(RESULT[entry.result] || ['', 'ok'])[1]}`;
    line.hidden = false;
  };
  function lotteryRow(batch) {
    const opens = Date.parse(batch.claim_opens_at);
    const before = wenhui.now() < opens;
    const closed = wenhui.now() >= Date.parse(batch.claim_closes_at);
    const button = el('button', { type: 'button', class: 'enter', 'data-batch-id': batch.id, disabled: before || closed,
      'data-opens-at': before ? opens : null, 'data-live': '参加抽签' }, before ? '未开始报名' : closed ? '报名已截止' : '参加抽签');
    const row = el('div', { class: 'claim-row lottery-row', 'data-batch-id': batch.id }, button,
      el('p', { class: 'claim-message', role: 'alert', hidden: true }));
    button.addEventListener('click', () => enter(batch, row));
    if (session()) standing(batch.id).then((entry) => showStanding(row, entry, batch)).catch(() => {});
    return row;
  }
  const enter = async (batch, row) => {
    if (!session()) {
      show('account');
      return;
    }
    const button = row.querySelector('button.enter');
    const line = row.querySelector('.claim-message');
    if (button.dataset.busy === '1') return;
    button.dataset.busy = '1';
    button.disabled = true;
    button.textContent = '正在报名…';
    try {
      await retrying(() => asCitizen(`/v1/batches/${batch.id}/entries`, { method: 'POST', body: {} }), (ms) => {
        line.textContent = `排队中，${Math.ceil(ms / 1000)}秒后自动重试…`;
        line.className = 'claim-message wait';
        line.hidden = false;
      });
      showStanding(row, { batch_id: batch.id, result: 'pending' }, batch);
    } catch (error) {
      button.dataset.busy = '';
      button.disabled = false;
      button.textContent = '参加抽签';
      line.textContent = error.message;
      line.className = 'claim-message refused';
      line.hidden = false;
    }
  };

  // ---- Waitlists (排队) ----------------------------------------------------------------------
  // Joining is once per citizen on the server (again: the same), with the phone registered, to be
  // texted when a voucher comes to them. The place is drawn from the committed seed and the
  // citizen's id alone (docs/waitlist.md): joining early or often changes nothing.
  const WAITLISTS = 'wenhui.waitlist.';
  const joinedKey = () => WAITLISTS + ((session() || {}).citizen_id || '');
  const joined = () => {
    try {
      return JSON.parse(localStorage.getItem(joinedKey()) || '[]');
    } catch (_) {
      return [];
    }
  };
  const rememberJoin = (batchId) => {
    const ids = joined();
    if (!ids.includes(batchId)) localStorage.setItem(joinedKey(), JSON.stringify([batchId, ...ids].slice(0, 50)));
  };
  const myPlace = (batchId) => asCitizen(`/v1/batches/${batchId}/waitlist/me`);
  const PASSED = {
    voucher_expired: '已过号：券过期未用，已顺延给下一位。',
    voucher_forfeited: '已过号：券已作废，已顺延给下一位。',
    limit_reached: '已过号：您已达领取上限。',
  };
  // 'waiting' before the opening, then the place; 'issued'; 'passed'. [text, style]
  const placeText = (mine, batch) => {
    if (mine.status === 'issued') return ['排到了！券已放入“我的券”。', 'ok'];
    if (mine.status === 'passed') return [PASSED[mine.passed_reason] || '已过号。', 'refused'];
    if (mine.place == null) {
      const when = batch ? `，${cst(Date.parse(batch.claim_closes_at))} 后按公开规则排定名次` : '，等待排定名次';
      return [`已排队${when}`, 'ok'];
    }
    const ahead = mine.ahead ? `前面还有 ${mine.ahead} 人` : '下一位就是您';
    return [`排在第 ${mine.place} 位 · ${ahead}；轮到您时短信通知`, 'wait'];
  };
  const showPlace = (row, mine, batch) => {
    if (mine.status === 'not_joined') return;
    rememberJoin(mine.batch_id);
    row.querySelector('.join-form').hidden = true;
    const line = row.querySelector('.claim-message');
    const [text, kind] = placeText(mine, batch);
    line.textContent = text;
    line.className = `claim-message ${kind}`;
    line.hidden = false;
  };
  function waitlistRow(batch) {
    const opens = Date.parse(batch.claim_opens_at);
    const before = wenhui.now() < opens;
    const closed = wenhui.now() >= Date.parse(batch.claim_closes_at);
    const phone = el('input', { type: 'tel', class: 'join-phone', inputmode: 'numeric', maxlength: 11,
      placeholder: '注册手机号（轮到您时短信通知）', 'aria-label': '注册手机号', autocomplete: 'tel' });
    const button = el('button', { type: 'button', class: 'enter join', 'data-batch-id': batch.id, disabled: before || closed,
      'data-opens-at': before ? opens : null, 'data-live': '排队' }, before ? '未开始排队' : closed ? '排队已截止' : '排队');
    const row = el('div', { class: 'claim-row waitlist-row', 'data-batch-id': batch.id },
      el('div', { class: 'join-form' }, closed ? null : phone, button),
      el('p', { class: 'claim-message', role: 'alert', hidden: true }));
    button.addEventListener('click', () => joinLine(batch, row, phone));
    if (session()) myPlace(batch.id).then((mine) => showPlace(row, mine, batch)).catch(() => {});
    return row;
  }
  const joinLine = async (batch, row, phone) => {
    if (!session()) {
      show('account');
      return;
    }
    const button = row.querySelector('button.join');
    const line = row.querySelector('.claim-message');
    if (button.dataset.busy === '1') return;
    button.dataset.busy = '1';
    button.disabled = true;
    button.textContent = '正在排队…';
    try {
      const body = { phone: phone.value.replace(/\D/g, '') };
      await retrying(() => asCitizen(`/v1/batches/${batch.id}/waitlist`, { method: 'POST', body }), (ms) => {
        line.textContent = `人多，${Math.ceil(ms / 1000)}秒后自动重试…`;
        line.className = 'claim-message wait';
        line.hidden = false;
      });
      showPlace(row, await myPlace(batch.id), batch);
    } catch (error) {
      button.dataset.busy = '';
      button.disabled = false;
      button.textContent = '排队';
      line.textContent = error.message;
      line.className = 'claim-message refused';
      line.hidden = false;
    }
  };
  // The places of the waitlists this phone joined, under my vouchers.
  const waitlistPlaces = async () => {
    const ids = joined();
    if (!ids.length) return [];
    const places = await Promise.all(ids.map((id) => myPlace(id).catch(() => null)));
    const rows = places.filter((p) => p && p.status !== 'not_joined').map((mine) => {
      const [text, kind] = placeText(mine, batchesById.get(mine.batch_id));
      return el('article', { class: `lottery-result waitlist-place ${mine.status}`, 'data-batch-id': mine.batch_id },
        el('span', { class: 'name' }, mine.batch_name),
        el('span', { class: `claim-message ${kind}` }, text));
    });
    return rows.length ? [el('h2', {}, '我的排队'), ...rows] : [];
  };

  // ---- My vouchers and the QR code ---------------------------------------------------------
  const STATUS = { active: '可使用', used: '已使用', expired: '已过期', forfeited: '已作废' };
  const mine = views.mine;
  const showMineError = (error) => mine.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
  // '3月3日 09:00 到期 · 还剩1天23小时' for a live voucher (kept up to date by the tick).
  const timeLeft = (ms) => {
    const minutes = Math.max(0, Math.ceil(ms / 60000));
    const [d, h, m] = [Math.floor(minutes / 1440), Math.floor((minutes % 1440) / 60), minutes % 60];
    if (d) return `${d}天${h ? `${h}小时` : ''}`;
    if (h) return `${h}小时${m ? `${m}分` : ''}`;
    return `${m}分钟`;
  };
  const expiry = (voucher) => {
    const at = Date.parse(voucher.expires_at);
    return voucher.status === 'active' ? `${cst(at)} 到期 · 还剩${timeLeft(at - wenhui.now())}` : `${cst(at)} 到期`;
  };
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
        el('span', { class: 'expires', 'data-expires-at': active ? Date.parse(voucher.expires_at) : null }, expiry(voucher))),
      active ? el('span', { class: 'open-qr' }, '点击出示二维码') : null);
    if (active) {
      node.addEventListener('click', () => openQr({
        title: terms(voucher),
        name: `${voucher.batch_name} · ${cst(Date.parse(voucher.expires_at))} 到期`,
        alt: '消费券二维码',
        path: `/v1/vouchers/${voucher.id}/qr`,
      }));
    }
    return node;
  };
  // The public check of a drawn lottery (docs/lottery-audit.md): the citizen's keyed hash and id,
  // and when asked (the document lists every entrant), whether the draw's published audit has the
  // hash among its entrants and its winners.
  const auditCheck = (entry) => {
    if (!entry.entrant_hash) return null;
    const path = `/v1/batches/${entry.batch_id}/draw/audit`;
    const verdict = el('p', { class: 'verdict', role: 'status' });
    const box = el('details', { class: 'audit-check' },
      el('summary', {}, '公开核验'),
      el('p', { class: 'note' }, '您的抽签凭据，即用开奖时公布的盐值对您的编号做 HMAC-SHA256：'),
      el('code', { class: 'mono hash' }, entry.entrant_hash),
      el('p', { class: 'note' }, '您的编号：', el('code', { class: 'mono' }, entry.citizen_id)),
      verdict,
      el('a', { class: 'audit-link', href: path, target: '_blank', rel: 'noopener' }, '开奖核验数据（JSON，任何人可复核）'));
    box.addEventListener('toggle', async () => {
      if (!box.open || verdict.textContent) return;
      verdict.textContent = '正在核对名单…';
      try {
        const audit = await wenhui.api(path);
        const entered = audit.entrants.includes(entry.entrant_hash);
        const won = audit.winners.includes(entry.entrant_hash);
        verdict.textContent = !entered ? '报名名单中没有您的凭据，请联系活动方。'
          : won ? '报名名单和中签名单中都有您的凭据。' : '报名名单中有您的凭据，中签名单中没有。';
      } catch (error) {
        verdict.textContent = error.message || '暂时无法核对，请稍后再试。';
      }
    });
    return box;
  };
  // The results of the lotteries this phone entered, newest first.
  const lotteryResults = async () => {
    const ids = entered();
    if (!ids.length) return [];
    const entries = await Promise.all(ids.map((id) => standing(id).catch(() => null)));
    const rows = entries.filter((e) => e && e.result !== 'not_entered').map((entry) => {
      const [text, kind] = RESULT[entry.result] || ['', 'ok'];
      return el('article', { class: `lottery-result ${entry.result}`, 'data-batch-id': entry.batch_id },
        el('span', { class: 'name' }, entry.batch_name),
        el('span', { class: `claim-message ${kind}` }, resultText(entry, batchesById.get(entry.batch_id)) || text),
        auditCheck(entry));
    });
    return rows.length ? [el('h2', {}, '我的抽签'), ...rows] : [];
  };
  async function loadMine() {
    if (!session()) {
      show('account');
      return;
    }
    mine.replaceChildren(el('p', { class: 'note' }, '正在加载我的券…'));
    const [page, results, places] =
      await Promise.all([asCitizen('/v1/me/vouchers'), lotteryResults(), waitlistPlaces()]);
    mine.replaceChildren(el('h2', {}, '我的券'), ...(page.vouchers.length
      ? page.vouchers.map(voucherCard)
      : [el('p', { class: 'note' }, '还没有领到券。')]), ...results, ...places);
  }

  // The QR code (a voucher's or the card's) full screen, renewed before it expires without a tap.
  let qrTimer = null;
  let qrShown = null;
  const qr = $('qr');
  const closeQr = () => {
    clearTimeout(qrTimer);
    qrTimer = null;
    qrShown = null;
    qr.hidden = true;
    $('qr-image').removeAttribute('src');
    delete qr.dataset.token;
    document.body.classList.remove('showing-qr');
  };
  const renewQr = async (target) => {
    try {
      const answer = await asCitizen(target.path, { method: 'POST', body: {} });
      if (qrShown !== target) return;
      // The server's SVG as an image (CSP allows data: images; no markup enters the page).
      $('qr-image').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(answer.svg)}`;
      qr.dataset.token = answer.token;
      qr.dataset.renewals = String(Number(qr.dataset.renewals || 0) + 1);
      const left = Date.parse(answer.expires_at) - wenhui.now();
      $('qr-state').textContent = `二维码会自动刷新，无需操作\n本码 ${cst(Date.parse(answer.expires_at))} 前有效`;
      qrTimer = setTimeout(() => renewQr(target), Math.max(3000, left - 15000));
    } catch (error) {
      if (qrShown !== target) return;
      $('qr-state').textContent = error.message;
      if (error.status === 429 || error.status === 0 || error.status >= 500) {
        qrTimer = setTimeout(() => renewQr(target), (error.retryAfter || 3) * 1000);
      }
    }
  };
  function openQr(target) {
    clearTimeout(qrTimer);
    qrShown = target;
    $('qr-title').textContent = target.title;
    $('qr-name').textContent = target.name;
    $('qr-image').alt = target.alt;
    $('qr-state').textContent = '正在生成二维码…';
    qr.dataset.renewals = '0';
    qr.hidden = false;
    document.body.classList.add('showing-qr');
    renewQr(target);
  }
  $('qr-close').addEventListener('click', closeQr);

  // ---- The benefit card (文惠卡) --------------------------------------------------------------
  const cardView = views.card;
  const CARD_STATUS = { active: '正常', frozen: '已冻结' };
  const showCardError = (error) => cardView.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
  const inGroups = (number) => String(number).replace(/(\d{4})(?=\d)/g, '$1 ');
  // Taking the card: by phone (the account's) or on a bank card. Not keyed on the server: a
  // second try answers card_exists, and then the card is simply read.
  const takeCard = () => {
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const mobile = el('button', { type: 'button', id: 'card-mobile' }, '用手机号免费开卡');
    const number = el('input', { id: 'bank-card', name: 'bank_card_number', inputmode: 'numeric', autocomplete: 'off',
      maxlength: '23', spellcheck: 'false', placeholder: '12到19位银行卡号' });
    const bank = el('button', { type: 'submit', id: 'card-bank', class: 'secondary' }, '绑定银行卡开卡');
    const form = el('form', { class: 'card take-card' },
      el('h2', {}, '领取文惠卡'),
      el('p', { class: 'note' }, '每人一张，免费。在参与活动的商户用卡付款享会员优惠、得积分，积分可兑换消费券。'),
      mobile,
      el('p', { class: 'or' }, '或者'),
      el('label', { for: 'bank-card' }, '银行卡号'),
      number, bank, error);
    const issue = async (body) => {
      error.hidden = true;
      mobile.disabled = true;
      bank.disabled = true;
      try {
        renderCard(await asCitizen('/v1/me/card', { method: 'POST', body }));
      } catch (refused) {
        if (refused.code === 'card_exists') {
          loadCard().catch(showCardError);
          return;
        }
        error.textContent = refused.message;
        error.hidden = false;
      } finally {
        mobile.disabled = false;
        bank.disabled = false;
      }
    };
    mobile.addEventListener('click', () => issue({ via: 'mobile' }));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      issue({ via: 'bank_card', bank_card_number: number.value.replace(/[\s-]/g, '') });
    });
    return form;
  };
  // Points per season, with the day they expire.
  const seasonPoints = (card) => card.seasons.filter((s) => s.points > 0 || s.points_debt > 0).map((s) => {
    const season = seasonsById.get(s.season_id);
    return el('li', { class: 'season-points' },
      el('span', {}, `${season ? season.name : '往期活动'}：`, el('strong', {}, String(s.points)), ' 积分'),
      el('span', { class: 'expires' }, s.expires_at ? `${cst(Date.parse(s.expires_at))} 到期` : '下下期活动结束时到期'),
      s.points_debt > 0 ? el('span', { class: 'debt' }, `待扣 ${s.points_debt} 积分`) : null);
  });
  // The batches that may be exchanged for points, each with its own button.
  const offers = (card) => {
    const rows = [...batchesById.values()].filter((b) => b.points_price && !b.lottery).map((batch) => {
      const opens = Date.parse(batch.claim_opens_at);
      const before = wenhui.now() < opens;
      const out = !before && batch.remaining <= 0;
      const short = card.points < batch.points_price;
      const pending = sessionStorage.getItem(EXCHANGE + batch.id);
      const button = el('button', { type: 'button', class: 'exchange', 'data-batch-id': batch.id,
        disabled: card.status !== 'active' || before || out || (short && !pending) },
      before ? `${cst(opens)} 开始` : out ? '已兑完' : short && !pending ? '积分不足' : '兑换');
      const row = el('article', { class: 'offer', 'data-batch-id': batch.id },
        el('div', { class: 'offer-text' },
          el('span', { class: 'terms' }, terms(batch)),
          el('span', { class: 'name' }, batch.name),
          el('span', { class: 'where' }, namesCache ? where(batch, namesCache) : ''),
          el('span', { class: 'price' }, `${batch.points_price} 积分`)),
        button,
        el('p', { class: 'claim-message', role: 'alert', hidden: true }));
      button.addEventListener('click', () => exchange(batch, row));
      // An exchange a reload interrupted goes again with its key.
      if (pending && !before) exchange(batch, row);
      return row;
    });
    return el('section', { class: 'offers' }, el('h2', {}, '积分兑换'),
      ...(rows.length ? rows : [el('p', { class: 'note' }, '本期暂时没有可用积分兑换的券。')]));
  };
  const exchange = async (batch, row) => {
    const button = row.querySelector('button.exchange');
    const line = row.querySelector('.claim-message');
    const tell = (text, kind) => {
      line.textContent = text;
      line.className = `claim-message ${kind}`;
      line.hidden = !text;
    };
    if (button.dataset.busy === '1') return;
    button.dataset.busy = '1';
    button.disabled = true;
    button.textContent = '正在兑换…';
    tell('', '');
    try {
      const answer = await keptIntent(EXCHANGE + batch.id,
        (key) => asCitizen('/v1/me/card/exchanges', { method: 'POST', body: { batch_id: batch.id, points: batch.points_price }, idempotencyKey: key }),
        (ms) => tell(`排队中，${Math.ceil(ms / 1000)}秒后自动重试…`, 'wait'));
      // The card read again (points per season), the answer said where the voucher went.
      const card = await asCitizen('/v1/me/card').catch(() => null);
      if (card) renderCard(card);
      const shown = cardView.querySelector(`article.offer[data-batch-id="${batch.id}"]`) || row;
      const done = shown.querySelector('button.exchange');
      done.disabled = true;
      done.textContent = '已兑换';
      const line2 = shown.querySelector('.claim-message');
      line2.textContent = `兑换成功，用去 ${answer.points_spent} 积分，可在“我的券”中查看。`;
      line2.className = 'claim-message ok';
      line2.hidden = false;
    } catch (error) {
      button.dataset.busy = '';
      button.disabled = false;
      button.textContent = '兑换';
      tell(error.message, 'refused');
    }
  };
  function renderCard(card) {
    const active = card.status === 'active';
    const showQr = el('button', { type: 'button', id: 'card-qr', disabled: !active }, '出示卡码');
    showQr.addEventListener('click', () => openQr({
      title: '文惠卡',
      name: `卡号 ${card.number_masked}`,
      alt: '文惠卡二维码',
      path: '/v1/me/card/qr',
    }));
    const points = seasonPoints(card);
    cardView.replaceChildren(
      el('section', { class: `member ${card.status}` },
        el('p', { class: 'member-title' }, '文惠卡', el('span', { class: 'member-status' }, CARD_STATUS[card.status] || card.status)),
        el('p', { class: 'member-number' }, inGroups(card.number)),
        el('p', { class: 'member-via' }, card.bank_card ? `已绑定银行卡 ${card.bank_card}` : '手机号开卡'),
        el('p', { class: 'member-points' }, el('strong', {}, String(card.points)), ' 积分'),
        card.points_debt > 0 ? el('p', { class: 'member-debt' }, `待扣 ${card.points_debt} 积分（退货退回的积分，从以后得到的积分中扣除）`) : null),
      showQr,
      active ? el('p', { class: 'note' }, '付款时出示卡码：享商户会员优惠，消费得积分。') : el('p', { class: 'error' }, '卡已冻结，暂不能使用。'),
      points.length ? el('ul', { class: 'points-list' }, points) : el('p', { class: 'note' }, '还没有积分：用卡消费即可得积分。'),
      offers(card));
  }
  async function loadCard() {
    if (!session()) {
      show('account');
      return;
    }
    cardView.replaceChildren(el('p', { class: 'note' }, '正在加载文惠卡…'));
    try {
      renderCard(await asCitizen('/v1/me/card'));
    } catch (error) {
      if (error.code !== 'no_card') throw error;
      cardView.replaceChildren(takeCard());
    }
  }

  $('to-batches').addEventListener('click', () => show('batches'));
  $('to-mine').addEventListener('click', () => show('mine'));
  $('to-card').addEventListener('click', () => show('card'));
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
