'use strict';
// The finance console's admin side: seasons and batches (the API's refusals in Chinese, next to
// the field they concern), lottery draws and waitlists (docs/waitlist.md), and merchants (search, suspend, activate, settlement
// account requests decided by a second key). Written against the console shell's hook:
//   wenhui.console.section(name, title, render, {needs, season}) (console.js);
//   wenhui.console.may(action): whether the signed-in key may take `action` (GET /v1/staff/me's
//   `may`, from src/domain/access.rs: open_season, act_as_funder, manage_merchant, see_merchants).
// Every write carries an Idempotency-Key per intent, kept in sessionStorage until answered: a
// retry or a reload sends the same request with the same key, so it is made once.
(() => {
  const { el, cst, plain, isZero } = wenhui;
  const STAFF_KEY = 'wenhui.staffKey';
  const INTENT = 'wenhui.admin.intent.';
  const SEED = 'wenhui.admin.seed.';

  const hook = wenhui.console;
  const may = (action) => hook.may(action);

  // ---- Writes: one Idempotency-Key per intent, kept until answered ---------------------------
  // An intent is kept with its request; a reload sends it again (resume) to learn its answer.
  const write = async (intent, key, path, { method = 'POST', body = {} } = {}) => {
    let kept = null;
    try {
      kept = JSON.parse(sessionStorage.getItem(INTENT + intent) || 'null');
    } catch (_) {
      kept = null;
    }
    const same = kept && kept.owner === owner(key) && kept.path === path && JSON.stringify(kept.body) === JSON.stringify(body);
    const idempotencyKey = same ? kept.key : wenhui.randomKey();
    sessionStorage.setItem(INTENT + intent, JSON.stringify({ path, method, body, key: idempotencyKey, owner: owner(key) }));
    try {
      const answer = await wenhui.api(path, { method, key, body, idempotencyKey });
      sessionStorage.removeItem(INTENT + intent);
      return answer;
    } catch (error) {
      // Answered (a refusal): the intent is over. Unanswered (no network, 429, 5xx): kept.
      const answered = error.status >= 400 && error.status < 500 && error.status !== 429;
      if (answered) sessionStorage.removeItem(INTENT + intent);
      throw error;
    }
  };
  // Which staff key an intent was made with (the end of the key, which this tab holds anyway):
  // another key signed in later does not send it.
  function owner(key) {
    return String(key).slice(-12);
  }
  // Intents a reload interrupted: sent again with their own keys (answers are not shown: the
  // lists drawn afterwards show what was made). Another key's intents are dropped.
  const resume = async (key) => {
    const pending = [];
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const name = sessionStorage.key(i);
      if (name && name.startsWith(INTENT)) pending.push(name.slice(INTENT.length));
    }
    for (const intent of pending) {
      try {
        const kept = JSON.parse(sessionStorage.getItem(INTENT + intent));
        if (!kept || kept.owner !== owner(key)) {
          sessionStorage.removeItem(INTENT + intent);
          continue;
        }
        await write(intent, key, kept.path, { method: kept.method, body: kept.body });
      } catch (_) {
        // Refused or still unanswered: the person sees the lists and acts again.
      }
    }
  };

  // ---- Small pieces ------------------------------------------------------------------------
  const AMOUNT = /^\d{1,12}(\.\d{1,2})?$/;
  const names = wenhui.names();
  const regionName = (all, code) => (all.regions[code] ? `${all.regions[code]}` : code);
  const citiesOf = (all, province) =>
    Object.keys(all.regions).filter((c) => c.slice(0, 2) === province.slice(0, 2) && /00$/.test(c) && !/0000$/.test(c)).sort();
  const two = (n) => String(n).padStart(2, '0');
  // A datetime-local value ('2026-03-01T09:00') in Beijing time, for an instant (ms).
  const localValue = (ms) => {
    const d = new Date(ms + 8 * 3600 * 1000);
    return `${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}T${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
  };
  // The instant a datetime-local value names in Beijing time, as RFC 3339.
  const rfc3339 = (value) => (/^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(value) ? `${value}:00+08:00` : null);
  const hour = 3600 * 1000;
  const nextHour = () => Math.ceil(wenhui.now() / hour) * hour;

  const termsText = (b) => {
    if (b.kind === 'threshold') return isZero(b.min_spend) ? `无门槛减${plain(b.face_value)}` : `满${plain(b.min_spend)}减${plain(b.face_value)}`;
    const rest = 100 - b.percent;
    const zhe = rest === 0 ? '免单' : `${Math.floor(rest / 10)}${rest % 10 ? `.${rest % 10}` : ''}折`;
    return `${zhe}最高减${plain(b.cap)}`;
  };

  // A labelled field: its input, and a hint line for what the API says about it.
  const field = (form, name, label, input, note = '') => {
    const id = `${form.id}-${name}`;
    input.id = id;
    input.name = name;
    const hint = el('p', { class: 'hint', id: `${id}-hint`, 'aria-live': 'polite', hidden: true });
    input.setAttribute('aria-describedby', hint.id);
    const wrap = el('div', { class: 'field', 'data-field': name }, el('label', { for: id }, label), input, note ? el('p', { class: 'note' }, note) : null, hint);
    return wrap;
  };
  const input = (attrs = {}) => el('input', { autocomplete: 'off', ...attrs });

  // Shows what went wrong: next to the field the API (or our check) names, else above the button.
  const clearHints = (form) => {
    form.querySelectorAll('.hint').forEach((h) => { h.hidden = true; h.textContent = ''; });
    form.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
    const alert = form.querySelector('.form-error');
    if (alert) { alert.hidden = true; alert.textContent = ''; }
  };
  const showAt = (form, name, message) => {
    const wrap = name && form.querySelector(`.field[data-field="${name}"]`);
    if (!wrap) {
      const alert = form.querySelector('.form-error');
      alert.textContent = message;
      alert.hidden = false;
      return;
    }
    const hint = wrap.querySelector('.hint');
    hint.textContent = message;
    hint.hidden = false;
    const control = wrap.querySelector('input, select');
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  };
  // The field an API refusal concerns: the field its words name, else the code's field.
  const CODE_FIELDS = {
    invalid_name: ['name'], invalid_dates: ['claim_closes_at', 'ends_at'], invalid_budgets: ['budgets'],
    invalid_funder: ['budgets'], invalid_amount: ['budgets'], invalid_kind: ['kind'],
    invalid_terms: ['face_value', 'percent', 'cap'], terms_invalid: ['face_value', 'percent', 'cap'],
    invalid_stock: ['stock'], budget_exceeded: ['stock'], invalid_limit: ['per_citizen_limit'],
    invalid_valid_hours: ['valid_hours'], invalid_category: ['categories'], invalid_funding: ['funding'],
    funding_shares_sum: ['funding'], invalid_lottery: ['lottery'], invalid_issuer: ['issuer'],
    invalid_account: ['account_no'], seed_mismatch: ['seed'], invalid_seed: ['seed'],
  };
  const fieldOf = (form, error) => {
    const present = (n) => form.querySelector(`.field[data-field="${n}"]`);
    const words = error.detail || '';
    const named = [...form.querySelectorAll('.field[data-field]')].map((f) => f.dataset.field)
      .find((n) => new RegExp(`(^|[^a-z_])${n}([^a-z_]|$)`).test(words));
    if (named) return named;
    return (CODE_FIELDS[error.code] || []).find(present) || null;
  };
  const refused = (form, error) => showAt(form, fieldOf(form, error), error.message);
  const formShell = (id, title, submitText) => {
    const form = el('form', { id, class: 'admin-form', novalidate: true });
    const alert = el('p', { class: 'error form-error', role: 'alert', hidden: true });
    const submit = el('button', { type: 'submit' }, submitText);
    return { form, head: el('h3', {}, title), alert, submit };
  };
  const busy = (button, on, text) => {
    button.disabled = on;
    if (text) button.textContent = text;
  };

  // ---- Seasons and batches -----------------------------------------------------------------
  const seasonForm = (context, all, onMade) => {
    const { me, key } = context;
    const { form, head, alert, submit } = formShell('new-season', '新建活动', '创建活动');
    const start = nextHour();
    const name = input({ maxlength: 100, placeholder: '如：2026 文化消费季' });
    const starts = input({ type: 'datetime-local', value: localValue(start) });
    const ends = input({ type: 'datetime-local', value: localValue(start + 30 * 24 * hour) });
    const cap = input({ inputmode: 'decimal', placeholder: '不限', maxlength: 15 });
    const funders = [me.region, ...citiesOf(all, me.region)];
    const rows = el('div', { class: 'budget-rows' });
    const addRow = (funder = '', amount = '') => {
      const select = el('select', { 'aria-label': '出资方' }, ...funders.map((f) => el('option', { value: f, selected: f === funder }, regionName(all, f))));
      const money = input({ inputmode: 'decimal', placeholder: '金额（元）', value: amount, 'aria-label': '预算金额（元）', maxlength: 15 });
      const remove = el('button', { type: 'button', class: 'link' }, '删除');
      const row = el('div', { class: 'budget-row' }, select, money, remove);
      remove.addEventListener('click', () => row.remove());
      rows.append(row);
    };
    addRow(me.region);
    const more = el('button', { type: 'button', class: 'secondary' }, '增加出资方');
    more.addEventListener('click', () => addRow(funders.find((f) => ![...rows.querySelectorAll('select')].some((s) => s.value === f)) || ''));
    const budgets = el('div', { class: 'field', 'data-field': 'budgets' },
      el('span', { class: 'label' }, '各出资方预算（元，最多两位小数）'), rows, more, el('p', { class: 'hint', hidden: true }));
    form.append(head,
      field(form, 'name', '活动名称', name),
      el('p', { class: 'note' }, `省份：${regionName(all, me.region)}（${me.region}）；时间均为北京时间。`),
      el('div', { class: 'pair' }, field(form, 'starts_at', '开始时间', starts), field(form, 'ends_at', '结束时间', ends)),
      budgets,
      field(form, 'per_citizen_cap', '每人领取面额上限（元，可不填）', cap),
      alert, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearHints(form);
      const lines = [...rows.querySelectorAll('.budget-row')].map((r) => ({ funder: r.querySelector('select').value, amount: r.querySelector('input').value.trim() }));
      if (!name.value.trim()) return showAt(form, 'name', '请填写活动名称。');
      if (!rfc3339(starts.value)) return showAt(form, 'starts_at', '请填写开始时间。');
      if (!rfc3339(ends.value)) return showAt(form, 'ends_at', '请填写结束时间。');
      if (!lines.length) return showAt(form, 'budgets', '至少需要一个出资方。');
      if (lines.some((l) => !AMOUNT.test(l.amount))) return showAt(form, 'budgets', '预算金额为元，最多两位小数，如 100000.00。');
      if (cap.value.trim() && !AMOUNT.test(cap.value.trim())) return showAt(form, 'per_citizen_cap', '金额为元，最多两位小数。');
      const body = { name: name.value.trim(), province: me.region, starts_at: rfc3339(starts.value), ends_at: rfc3339(ends.value), budgets: lines };
      if (cap.value.trim()) body.per_citizen_cap = cap.value.trim();
      busy(submit, true, '正在创建…');
      try {
        const season = await write('season', key, '/v1/seasons', { body });
        onMade(season, `已创建活动“${season.name}”。`);
      } catch (error) {
        refused(form, error);
      } finally {
        busy(submit, false, '创建活动');
      }
    });
    return form;
  };

  const batchForm = (context, all, season, onMade) => {
    const { me, key } = context;
    const { form, head, alert, submit } = formShell('new-batch', `新建批次 · ${season.name}`, '创建批次');
    const province = `${me.region.slice(0, 2)}0000`;
    const isCity = me.region !== province;
    const opens0 = Math.max(nextHour(), Date.parse(season.starts_at));
    const closes0 = Math.min(opens0 + 7 * 24 * hour, Date.parse(season.ends_at));
    const name = input({ maxlength: 100, placeholder: '如：书店满100减30' });
    const kind = el('select', {}, el('option', { value: 'threshold' }, '满减券（满X减Y）'), el('option', { value: 'percent' }, '折扣券（X折最高减Y）'));
    const face = input({ inputmode: 'decimal', placeholder: '30.00', maxlength: 15 });
    const minSpend = input({ inputmode: 'decimal', placeholder: '100.00', value: '0.00', maxlength: 15 });
    const zhe = input({ inputmode: 'decimal', placeholder: '8', maxlength: 4 });
    const cap = input({ inputmode: 'decimal', placeholder: '50.00', maxlength: 15 });
    const step = input({ inputmode: 'decimal', value: '1.00', maxlength: 15 });
    const stock = input({ inputmode: 'numeric', value: '100', maxlength: 9 });
    const limit = input({ inputmode: 'numeric', value: '1', maxlength: 3 });
    const hours = input({ inputmode: 'numeric', value: '72', maxlength: 5 });
    const opens = input({ type: 'datetime-local', value: localValue(opens0) });
    const closes = input({ type: 'datetime-local', value: localValue(closes0) });
    const categories = el('div', { class: 'checks' }, ...Object.entries(all.categories).map(([code, label]) =>
      el('label', { class: 'check' }, el('input', { type: 'checkbox', value: code, name: 'category' }), label)));
    const preview = el('p', { class: 'terms-preview', 'aria-live': 'polite' });
    const thresholdFields = el('div', { class: 'pair' }, field(form, 'face_value', '减免金额（元）', face), field(form, 'min_spend', '最低消费（元）', minSpend));
    const percentFields = el('div', { class: 'pair', hidden: true },
      field(form, 'percent', '折扣（几折，如 8 或 8.5）', zhe), field(form, 'cap', '最高减（元）', cap), field(form, 'step', '取整单位（元）', step));
    // Co-funding: a city's batch may share its subsidy with its province.
    const cofund = el('input', { type: 'checkbox', id: 'new-batch-cofund' });
    const share = input({ inputmode: 'numeric', value: '50', maxlength: 3 });
    const shareField = field(form, 'funding', `${regionName(all, me.region)}出资比例（%，其余由${regionName(all, province)}出资）`, share);
    shareField.hidden = true;
    const cofundRow = isCity ? el('div', { class: 'option' }, el('label', { class: 'check' }, cofund, `与${regionName(all, province)}共同出资`), shareField) : null;
    cofund.addEventListener('change', () => { shareField.hidden = !cofund.checked; });
    // A lottery: the console draws a seed and publishes its SHA-256; the seed is shown once to
    // be kept for the draw (and kept in this tab).
    const lottery = el('input', { type: 'checkbox', id: 'new-batch-lottery' });
    const seed = input({ readonly: true, class: 'mono', 'aria-label': '开奖种子' });
    const commitment = el('code', { class: 'mono' });
    // A waitlist: the draw ranks everyone; vouchers that expire or are forfeited go to the next.
    const waitlist = el('input', { type: 'checkbox', id: 'new-batch-waitlist' });
    const lotteryField = el('div', { class: 'field', 'data-field': 'lottery', hidden: true },
      el('label', { for: seed.id || 'new-batch-seed' }, '开奖种子（请抄存，开奖时需要）'), seed,
      el('p', { class: 'note' }, '公布的承诺（SHA-256）：', commitment),
      el('label', { class: 'check' }, waitlist, '排队发放：开奖排定全部名次，券过期或作废后顺延给下一位'),
      el('p', { class: 'hint', hidden: true }));
    seed.id = 'new-batch-seed';
    const newSeed = async () => {
      if (!(crypto.subtle && crypto.subtle.digest)) {
        seed.value = '';
        commitment.textContent = '此页面需通过 HTTPS 打开才能生成开奖种子。';
        return;
      }
      seed.value = wenhui.randomKey() + wenhui.randomKey();
      const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(seed.value));
      commitment.textContent = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    };
    lottery.addEventListener('change', async () => {
      lotteryField.hidden = !lottery.checked;
      limit.disabled = lottery.checked;
      if (lottery.checked) {
        limit.value = '1';
        if (!seed.value) await newSeed();
      }
    });
    const update = () => {
      const threshold = kind.value === 'threshold';
      thresholdFields.hidden = !threshold;
      percentFields.hidden = threshold;
      const money = (v) => (AMOUNT.test(v.trim()) ? v.trim() : '?');
      const off = percentOff(zhe.value);
      preview.textContent = threshold
        ? termsText({ kind: 'threshold', face_value: money(face.value), min_spend: money(minSpend.value || '0') })
        : termsText({ kind: 'percent', percent: off === null ? 0 : off, cap: money(cap.value) });
    };
    [kind, face, minSpend, zhe, cap].forEach((c) => c.addEventListener('input', update));
    kind.addEventListener('change', update);
    update();
    form.append(head,
      el('div', { class: 'pair' }, field(form, 'name', '批次名称', name), field(form, 'kind', '券种', kind)),
      thresholdFields, percentFields, el('p', { class: 'note' }, '券面：', preview),
      el('div', { class: 'pair' }, field(form, 'stock', '发放数量（张）', stock), field(form, 'per_citizen_limit', '每人限领（张）', limit), field(form, 'valid_hours', '领取后有效（小时）', hours)),
      el('div', { class: 'pair' }, field(form, 'claim_opens_at', '开抢时间（北京时间）', opens), field(form, 'claim_closes_at', '领取截止（北京时间）', closes)),
      el('div', { class: 'field', 'data-field': 'categories' }, el('span', { class: 'label' }, '可用类别'), categories, el('p', { class: 'hint', hidden: true })),
      ...(cofundRow ? [cofundRow] : []),
      el('div', { class: 'option' }, el('label', { class: 'check' }, lottery, '抽签发放（报名截止后开奖，每人一张）'), lotteryField),
      el('p', { class: 'note' }, `发放方：${regionName(all, me.region)}（${me.region}）`),
      alert, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearHints(form);
      const threshold = kind.value === 'threshold';
      const amount = (c, n, what) => (AMOUNT.test(c.value.trim()) ? null : [n, `${what}为元，最多两位小数，如 30.00。`]);
      const whole = (c, n, what) => (/^\d{1,9}$/.test(c.value.trim()) ? null : [n, `${what}请填写整数。`]);
      const checks = [
        name.value.trim() ? null : ['name', '请填写批次名称。'],
        ...(threshold ? [amount(face, 'face_value', '减免金额'), amount(minSpend, 'min_spend', '最低消费')]
          : [percentOff(zhe.value) === null ? ['percent', '折扣填 0.1 到 9.9 之间的数，最多一位小数。'] : null,
            amount(cap, 'cap', '最高减'), amount(step, 'step', '取整单位')]),
        whole(stock, 'stock', '发放数量'), whole(limit, 'per_citizen_limit', '每人限领'), whole(hours, 'valid_hours', '有效时长'),
        rfc3339(opens.value) ? null : ['claim_opens_at', '请填写开抢时间。'],
        rfc3339(closes.value) ? null : ['claim_closes_at', '请填写领取截止时间。'],
        cofund.checked && !(/^\d{1,3}$/.test(share.value.trim()) && +share.value >= 1 && +share.value <= 99) ? ['funding', '出资比例填 1 到 99。'] : null,
        lottery.checked && !/^[0-9a-f]{64}$/.test(commitment.textContent) ? ['lottery', commitment.textContent || '未能生成开奖种子。'] : null,
      ].filter(Boolean);
      const picked = [...categories.querySelectorAll('input:checked')].map((c) => c.value);
      if (!checks.length && !picked.length) checks.push(['categories', '至少选择一个可用类别。']);
      if (checks.length) return showAt(form, checks[0][0], checks[0][1]);
      const body = {
        name: name.value.trim(), issuer: me.region, kind: kind.value, stock: Number(stock.value),
        per_citizen_limit: Number(limit.value), valid_hours: Number(hours.value),
        claim_opens_at: rfc3339(opens.value), claim_closes_at: rfc3339(closes.value), categories: picked,
      };
      if (threshold) Object.assign(body, { face_value: face.value.trim(), min_spend: minSpend.value.trim() });
      else Object.assign(body, { percent: percentOff(zhe.value), cap: cap.value.trim(), step: step.value.trim(), min_spend: '0.00' });
      if (cofund.checked) body.funding = [{ funder: me.region, share: Number(share.value) }, { funder: province, share: 100 - Number(share.value) }];
      if (lottery.checked) body.lottery = { seed_sha256: commitment.textContent, waitlist: waitlist.checked };
      busy(submit, true, '正在创建…');
      try {
        const batch = await write(`batch.${season.id}`, key, `/v1/seasons/${season.id}/batches`, { body });
        if (lottery.checked) sessionStorage.setItem(SEED + batch.id, seed.value);
        onMade(batch, lottery.checked ? `已创建批次“${batch.name}”。开奖种子：${seed.value}（请抄存）` : `已创建批次“${batch.name}”（${termsText(batch)}）。`);
      } catch (error) {
        refused(form, error);
      } finally {
        busy(submit, false, '创建批次');
      }
    });
    return form;
  };
  // '8' → 20 (percent off), '8.5' → 15; null if it is not 0.1 to 9.9 with one decimal.
  function percentOff(text) {
    const m = /^(\d)(?:\.(\d))?$/.exec(String(text).trim());
    if (!m) return null;
    const tenths = Number(m[1]) * 10 + Number(m[2] || 0);
    return tenths >= 1 && tenths <= 99 ? 100 - tenths : null;
  }

  // When a lottery's commitments (the seed's and the salt's SHA-256) were published, and once
  // drawn, its public audit (docs/lottery-audit.md).
  const committedNote = (batch) => el('span', { class: 'note committed' }, `承诺公布于 ${cst(Date.parse(batch.lottery.committed_at))}`);
  const auditLink = (batch) => el('a', { class: 'audit-link', href: `/v1/batches/${batch.id}/draw/audit`, target: '_blank', rel: 'noopener' }, '核验数据（JSON）');
  const lotteryState = (batch, text, ...more) => el('div', { class: 'lottery-state' }, text, el('br'), committedNote(batch), ...more);
  // A lottery's state, and its draw for the issuer's admin once entries have closed.
  // A waitlist's line (GET …/waitlist): how long, vouchers issued, moved on, still waiting.
  // Read by staff whose region holds the batch's issuer (a province holds its cities).
  const holds = (region, issuer) => region === issuer || (region.endsWith('0000') && issuer.slice(0, 2) === region.slice(0, 2));
  const lineNote = (context, batch) => {
    if (!holds(context.me.region, batch.issuer)) return null;
    const note = el('span', { class: 'note waitlist-line' }, '正在读取排队情况…');
    wenhui.api(`/v1/batches/${batch.id}/waitlist`, { key: context.key }).then((line) => {
      const waiting = line.waiting == null ? '' : ` · 等候 ${line.waiting} 人`;
      note.textContent = `排队 ${line.length} 人 · 已发 ${line.issued} 张 · 顺延 ${line.moved_on} 张${waiting}`;
    }).catch((error) => { note.textContent = error.message; });
    return note;
  };
  const drawCell = (context, batch, redraw) => {
    if (!batch.lottery) return '抢领';
    const line = batch.lottery.waitlist;
    if (batch.lottery.drawn_at) {
      const drawn = `${line ? '已排定名次' : '已开奖'} ${cst(Date.parse(batch.lottery.drawn_at))}`;
      return line ? lotteryState(batch, drawn, el('br'), lineNote(context, batch), el('br'), auditLink(batch))
        : lotteryState(batch, drawn, el('br'), auditLink(batch));
    }
    const closes = Date.parse(batch.claim_closes_at);
    if (wenhui.now() < closes) {
      return line ? lotteryState(batch, `排队中，${cst(closes)}后排定名次`, el('br'), lineNote(context, batch))
        : lotteryState(batch, `报名中，${cst(closes)}后开奖`);
    }
    if (!(may('act_as_funder') && batch.issuer === context.me.region)) return lotteryState(batch, '待开奖');
    const form = el('form', { id: `draw-${batch.id}`, class: 'draw', novalidate: true });
    const seed = input({ class: 'mono', value: sessionStorage.getItem(SEED + batch.id) || '', placeholder: '开奖种子' });
    const alert = el('p', { class: 'error form-error', role: 'alert', hidden: true });
    const submit = el('button', { type: 'submit' }, '开奖');
    form.append(field(form, 'seed', '开奖种子', seed), alert, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearHints(form);
      if (!seed.value.trim()) return showAt(form, 'seed', '请填写创建批次时保存的开奖种子。');
      busy(submit, true, '正在开奖…');
      try {
        const drawn = await write(`draw.${batch.id}`, context.key, `/v1/batches/${batch.id}/draw`, { body: { seed: seed.value.trim() } });
        sessionStorage.removeItem(SEED + batch.id);
        redraw(drawn, el('div', { class: 'result', role: 'status' },
          el('strong', {}, `“${batch.name}”已开奖：${drawn.entries} 人报名，发出 ${drawn.issued} 张。`),
          el('p', { class: 'note' }, `开奖时间 ${cst(Date.parse(drawn.drawn_at))}`),
          el('p', { class: 'note mono' }, `种子 ${drawn.seed}`),
          el('p', { class: 'note mono' }, `SHA-256 ${drawn.seed_sha256}`),
          el('p', { class: 'note' }, committedNote(batch), ' · ', auditLink(batch))));
      } catch (error) {
        refused(form, error);
        busy(submit, false, '开奖');
      }
    });
    return form;
  };

  const renderSeasons = async (container, context) => {
    const all = await names;
    const { me } = context;
    const province = `${me.region.slice(0, 2)}0000`;
    const message = el('p', { class: 'ok', role: 'status', hidden: true });
    const say = (text) => { message.textContent = text; message.hidden = !text; };
    const picker = el('select', { id: 'season-pick', 'aria-label': '活动' });
    const tools = el('div', { class: 'tools' }, el('label', { for: 'season-pick' }, '活动'), picker);
    const forms = el('div');
    const list = el('div', { 'aria-live': 'polite' });
    container.replaceChildren(tools, message, forms, list);
    let seasons = [];
    const current = () => seasons.find((s) => s.id === picker.value) || null;
    const open = (which) => {
      say('');
      const season = current();
      if (which === 'season') forms.replaceChildren(seasonForm(context, all, (made, text) => { forms.replaceChildren(); load(made.id).then(() => say(text)); }));
      if (which === 'batch' && season) forms.replaceChildren(batchForm(context, all, season, (made, text) => { forms.replaceChildren(); load(season.id).then(() => say(text)); }));
      const first = forms.querySelector('input');
      if (first) first.focus();
    };
    if (may('open_season')) {
      const b = el('button', { type: 'button', id: 'open-season-form', class: 'secondary' }, '新建活动');
      b.addEventListener('click', () => open('season'));
      tools.append(b);
    }
    const batchButton = may('act_as_funder') ? el('button', { type: 'button', id: 'open-batch-form', class: 'secondary' }, '新建批次') : null;
    if (batchButton) {
      batchButton.addEventListener('click', () => open('batch'));
      tools.append(batchButton);
    }
    const showBatches = async () => {
      const season = current();
      if (batchButton) batchButton.hidden = !season || season.status === 'closed';
      if (!season) {
        list.replaceChildren(el('p', { class: 'note' }, '还没有活动。'));
        return;
      }
      const batches = await wenhui.api(`/v1/seasons/${season.id}/batches?ended=true`);
      if (current() !== season) return; // another season was picked meanwhile
      const funders = season.funders.map((f) => `${regionName(all, f.funder)} 可用 ${wenhui.yuan(f.available)}`).join('；');
      const head = el('p', { class: 'note' }, `${cst(Date.parse(season.starts_at))} 至 ${cst(Date.parse(season.ends_at))} · ${funders}`);
      if (!batches.length) {
        list.replaceChildren(head, el('p', { class: 'note' }, '这个活动还没有批次。'));
        return;
      }
      const rows = batches.map((b) => {
        const state = el('td', { class: 'state' });
        const counts = el('td', { class: 'num' }, `${b.claimed} / ${b.stock}`);
        const redraw = (drawn, node) => {
          state.replaceChildren(node);
          counts.textContent = `${drawn.issued} / ${b.stock}`;
        };
        state.append(drawCell(context, b, redraw));
        const where = b.categories.map((c) => all.categories[c] || c).join('、');
        const funding = b.funding.length > 1 ? b.funding.map((f) => `${regionName(all, f.funder)}${f.share}%`).join(' + ') : regionName(all, b.issuer);
        return el('tr', { 'data-batch-id': b.id },
          el('td', {}, el('strong', {}, b.name), el('br'), el('span', { class: 'note' }, where)),
          el('td', { class: 'terms' }, termsText(b)),
          el('td', { class: 'funding' }, funding),
          counts,
          el('td', {}, `${cst(Date.parse(b.claim_opens_at))} – ${cst(Date.parse(b.claim_closes_at))}`),
          state);
      });
      list.replaceChildren(head, el('table', { class: 'grid', id: 'batch-table' },
        el('thead', {}, el('tr', {}, ...['批次', '券面', '出资', '已领/库存', '领取时间', '发放'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, rows)));
    };
    const load = async (select = null) => {
      const page = await wenhui.api('/v1/seasons?limit=100');
      seasons = page.seasons.filter((s) => s.province === province);
      const chosen = select || picker.value || (context.season && context.season.id) || (seasons[0] && seasons[0].id) || '';
      picker.replaceChildren(...seasons.map((s) => el('option', { value: s.id, selected: s.id === chosen }, `${s.name}（${s.status === 'closed' ? '已结束' : cst(Date.parse(s.starts_at)).split(' ')[0]}起）`)));
      picker.hidden = !seasons.length;
      await showBatches();
    };
    picker.addEventListener('change', () => { forms.replaceChildren(); say(''); showBatches(); });
    try {
      await resume(context.key);
      await load();
    } catch (error) {
      list.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
    }
  };

  // ---- Merchants ---------------------------------------------------------------------------
  const STATUS = { active: '营业中', suspended: '已暂停' };
  const REQUEST = { pending: '待审批', approved: '已批准', rejected: '已驳回', expired: '已过期' };

  const accountPanel = async (context, merchant, panel, refresh) => {
    const { key } = context;
    const manage = may('manage_merchant');
    const note = el('p', { class: 'error', role: 'alert', hidden: true });
    const fail = (error) => { note.textContent = error.message; note.hidden = false; };
    const page = await wenhui.api(`/v1/merchants/${merchant.id}/settlement-account/requests?limit=100`, { key });
    const requests = page.requests.slice().reverse();
    const items = requests.map((r) => {
      const to = `${r.to.bank} ${r.to.account_no}（${r.to.account_name}）`;
      const item = el('li', { class: `request ${r.status}`, 'data-request-id': r.id },
        el('span', { class: 'badge' }, REQUEST[r.status] || r.status), ` 改为 ${to} · 理由：${r.reason} · ${cst(Date.parse(r.requested_at))}提出`);
      if (r.decision && r.decision.note) item.append(` · 审批意见：${r.decision.note}`);
      if (manage && r.status === 'pending') {
        const approve = el('button', { type: 'button', class: 'approve' }, '批准');
        const reject = el('button', { type: 'button', class: 'reject secondary' }, '驳回');
        const decide = async (verb, button) => {
          note.hidden = true;
          button.disabled = true;
          try {
            const answer = await write(`${verb}.${r.id}`, key, `/v1/merchants/${merchant.id}/settlement-account/requests/${r.id}/${verb}`, { body: {} });
            if (answer && answer.merchant) Object.assign(merchant, answer.merchant);
            await refresh(verb === 'approve' ? '已批准，今后结算到新账户。' : '已驳回。');
          } catch (error) {
            button.disabled = false;
            fail(error);
          }
        };
        approve.addEventListener('click', () => decide('approve', approve));
        reject.addEventListener('click', () => decide('reject', reject));
        item.append(el('span', { class: 'actions' }, approve, reject));
      }
      return item;
    });
    const parts = [el('h4', {}, '结算账户变更'), el('p', { class: 'note' }, '变更须由另一名管理员批准后生效（双人复核）。'),
      items.length ? el('ul', { class: 'requests' }, items) : el('p', { class: 'note' }, '没有变更申请。'), note];
    if (manage && !requests.some((r) => r.status === 'pending')) {
      const { form, head, alert, submit } = formShell(`account-${merchant.id}`, '申请变更结算账户', '提交申请');
      const bank = input({ maxlength: 100, placeholder: '开户银行' });
      const number = input({ inputmode: 'numeric', maxlength: 34, placeholder: '8–34位数字' });
      const holder = input({ maxlength: 100, placeholder: '账户名' });
      const reason = input({ maxlength: 500, placeholder: '如：商户来函更换开户行' });
      form.append(head, el('div', { class: 'pair' }, field(form, 'bank', '开户银行', bank), field(form, 'account_no', '账号', number), field(form, 'account_name', '账户名', holder)),
        field(form, 'reason', '变更理由', reason), alert, submit);
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        clearHints(form);
        if (!/^\d{8,34}$/.test(number.value.trim())) return showAt(form, 'account_no', '账号为8到34位数字。');
        const body = { bank: bank.value.trim(), account_no: number.value.trim(), account_name: holder.value.trim(), reason: reason.value.trim() };
        busy(submit, true, '正在提交…');
        try {
          await write(`account.${merchant.id}`, key, `/v1/merchants/${merchant.id}/settlement-account`, { method: 'PUT', body });
          await refresh('已提交，等待另一名管理员批准。');
        } catch (error) {
          refused(form, error);
          busy(submit, false, '提交申请');
        }
      });
      parts.push(form);
    }
    panel.replaceChildren(...parts);
  };

  const accountText = (m) => `${m.settlement_account.bank} ****${m.settlement_account.account_no.slice(-4)}`;

  const renderMerchants = async (container, context) => {
    const all = await names;
    const { me, key } = context;
    const city = el('select', { id: 'merchant-city' });
    const cities = /0000$/.test(me.region) ? citiesOf(all, me.region) : [me.region];
    if (cities.length > 1) city.append(el('option', { value: me.region }, `${regionName(all, me.region)}全部`));
    city.append(...cities.map((c) => el('option', { value: c }, regionName(all, c))));
    const name = input({ id: 'merchant-name', type: 'search', maxlength: 50, placeholder: '商户名称的一部分' });
    const search = el('form', { class: 'tools', id: 'merchant-search', role: 'search' },
      el('label', { for: 'merchant-city' }, '城市'), city, el('label', { for: 'merchant-name' }, '名称'), name,
      el('button', { type: 'submit' }, '搜索'));
    const message = el('p', { class: 'ok', role: 'status', hidden: true });
    const list = el('div', { 'aria-live': 'polite' });
    container.replaceChildren(search, message, list);
    const say = (text) => { message.textContent = text; message.hidden = !text; };
    let after = null;
    let shown = [];
    const row = (m) => {
      const status = el('td', { class: `status ${m.status}` }, STATUS[m.status] || m.status);
      const actions = el('td', { class: 'actions' });
      const panel = el('td', { colspan: 6, class: 'panel' });
      const detail = el('tr', { class: 'detail', hidden: true }, panel);
      const fail = el('span', { class: 'error inline', role: 'alert', hidden: true });
      if (may('manage_merchant')) {
        const next = m.status === 'active' ? ['suspend', '暂停'] : ['activate', '恢复'];
        const toggle = el('button', { type: 'button', class: `${next[0]} secondary` }, next[1]);
        toggle.addEventListener('click', async () => {
          toggle.disabled = true;
          fail.hidden = true;
          try {
            const answer = await write(`${next[0]}.${m.id}`, key, `/v1/merchants/${m.id}/${next[0]}`, { body: {} });
            m.status = answer.status;
            const [again, againDetail] = row(m);
            tr.replaceWith(again);
            detail.replaceWith(againDetail);
            say(`“${m.name}”${answer.status === 'active' ? '已恢复营业' : '已暂停'}。`);
          } catch (error) {
            toggle.disabled = false;
            fail.textContent = error.message;
            fail.hidden = false;
          }
        });
        actions.append(toggle);
      }
      const account = el('button', { type: 'button', class: 'account link', 'aria-expanded': 'false' }, '结算账户');
      const refresh = async (text) => {
        accountCell.textContent = accountText(m);
        await accountPanel(context, m, panel, refresh);
        if (text) say(text);
      };
      account.addEventListener('click', async () => {
        const opening = detail.hidden;
        detail.hidden = !opening;
        account.setAttribute('aria-expanded', String(opening));
        if (opening) {
          panel.replaceChildren(el('p', { class: 'note' }, '正在加载…'));
          try {
            await refresh('');
          } catch (error) {
            panel.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
          }
        }
      });
      actions.append(account, fail);
      const accountCell = el('td', { class: 'account' }, accountText(m));
      const tr = el('tr', { 'data-merchant-id': m.id },
        el('td', {}, el('strong', {}, m.name), el('br'), el('span', { class: 'note mono' }, m.credit_code)),
        el('td', {}, all.categories[m.category] || m.category),
        el('td', {}, regionName(all, m.city)),
        status,
        accountCell,
        actions);
      return [tr, detail];
    };
    const draw = (more) => {
      const table = el('table', { class: 'grid', id: 'merchant-table' },
        el('thead', {}, el('tr', {}, ...['商户', '类别', '城市', '状态', '结算账户', '操作'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, shown.flatMap(row)));
      const parts = shown.length ? [table] : [el('p', { class: 'note' }, '没有找到商户。')];
      if (more) {
        const button = el('button', { type: 'button', class: 'secondary' }, '加载更多');
        button.addEventListener('click', () => fetchPage(false));
        parts.push(button);
      }
      list.replaceChildren(...parts);
    };
    const fetchPage = async (fresh) => {
      if (fresh) { after = null; shown = []; say(''); }
      const query = new URLSearchParams({ city: city.value, limit: '50' });
      if (name.value.trim()) query.set('name', name.value.trim());
      if (after) query.set('after', after);
      try {
        const page = await wenhui.api(`/v1/merchants?${query}`, { key });
        shown = shown.concat(page.merchants);
        after = page.next_after;
        draw(Boolean(after));
      } catch (error) {
        list.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message));
      }
    };
    search.addEventListener('submit', (event) => { event.preventDefault(); fetchPage(true); });
    city.addEventListener('change', () => fetchPage(true));
    await fetchPage(true);
  };

  // Offered only to a key that may act in them; neither needs a season picked (the seasons
  // section has its own picker, and a province may have no season yet).
  hook.section('seasons', '活动与批次', (container, context) => { renderSeasons(container, context); },
    { needs: 'act_as_funder', season: false });
  hook.section('merchants', '商户管理', (container, context) => { renderMerchants(container, context); },
    { needs: 'see_merchants', season: false });
})();
