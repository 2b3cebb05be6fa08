'use strict';
// The console's money sections: the season dashboard (figures and charts of the report),
// reconciliation with every break, settlements (run, list, payout file, the bank's payout),
// settlement holds (暂扣结算: hold, release, reject with four eyes), the merchants' cash-out risk
// scores and closing the season. Figures are shown as the JSON report gives them (yuan strings, re-written
// as ¥1,234.50); the one sum made here (sales by city) is in integer fen (BigInt). The charts are
// drawn by the server (GET …/report?format=svg) and fetched with the key like any call.
(() => {
  const { el, yuan } = wenhui;
  const { section } = wenhui.console;

  // '1234.50' → 123450n; '-3.00' → -300n.
  const fen = (text) => {
    const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(text));
    if (!m) return 0n;
    const value = BigInt(m[2]) * 100n + BigInt((m[3] || '').padEnd(2, '0'));
    return m[1] ? -value : value;
  };
  // 123450n → '1234.50'.
  const fromFen = (value) => {
    const sign = value < 0n ? '-' : '';
    const abs = value < 0n ? -value : value;
    return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, '0')}`;
  };
  const when = (rfc3339) => (rfc3339 ? wenhui.cst(Date.parse(rfc3339)) : '—');
  const regionName = (ctx, code) => (code ? `${ctx.names.regions[code] || code}` : '—');
  const categoryName = (ctx, slug) => ctx.names.categories[slug] || slug;

  // A table: columns [{ field, title, money, count }], rows of objects; each row carries
  // data-key, each cell data-field (what a test or a reader of the markup matches on).
  const table = (caption, columns, rows, keyOf, kind) =>
    el('div', { class: 'table-wrap' },
      el('table', { class: kind ? `figures ${kind}` : 'figures' },
        el('caption', {}, caption),
        el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.money || c.count ? 'num' : '' }, c.title)))),
        el('tbody', {}, rows.length
          ? rows.map((row) => el('tr', { 'data-key': keyOf(row) }, columns.map((c) => {
            const value = c.show ? c.show(row) : row[c.field];
            const text = c.money ? yuan(value) : String(value ?? '—');
            // A column with `node` draws its cell (an action form); null: '—'.
            const node = c.node ? c.node(row) : null;
            const cls = node ? 'actions' : c.money || c.count ? 'num' : '';
            return el(c.header ? 'th' : 'td', { 'data-field': c.field, class: cls, scope: c.header ? 'row' : false }, node || text);
          })))
          : el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, '暂无数据')))));

  // A chart of the report, fetched with the key and shown from a data: URL (the page's CSP
  // allows images from data:, and an SVG in an <img> runs nothing).
  const chart = (ctx, view, title) => {
    const img = el('img', { alt: title, 'data-view': view, width: 960, height: 360 });
    const figure = el('figure', { class: 'chart' }, img);
    ctx.file(`/v1/seasons/${ctx.season.id}/report?format=svg&view=${view}`)
      .then((blob) => blob.text())
      .then((svg) => {
        img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
      })
      .catch((failure) => figure.replaceChildren(el('p', { class: 'error' }, `${title}：${failure.message}`)));
    return figure;
  };

  const tile = (label, value, field) =>
    el('div', { class: 'tile' }, el('span', { class: 'label' }, label), el('strong', { 'data-field': field }, value));

  // The dashboard: the report's figures, its charts, and its tables.
  const dashboard = async (pane, ctx) => {
    const report = await ctx.api(`/v1/seasons/${ctx.season.id}/report`);
    const scope = report.city ? `${regionName(ctx, report.city)}视图（本市出资与商户）` : '全省视图';
    pane.append(
      el('p', { class: 'note' }, `${report.season_name} · ${scope} · 数据截至 ${when(report.generated_at)}（北京时间）`,
        report.final ? ' · 结季报告' : ''),
      el('div', { class: 'tiles' },
        tile('财政补贴（已核销优惠）', yuan(report.totals.discount), 'discount'),
        tile('带动消费', yuan(report.totals.order_amount), 'order_amount'),
        tile('杠杆率（每 1 元补贴带动的消费）', report.totals.leverage ? `${report.totals.leverage} 倍` : '—', 'leverage')),
      el('div', { class: 'charts' },
        chart(ctx, 'funders', '各出资方资金'),
        chart(ctx, 'days', '每日领券与核销'),
        chart(ctx, 'categories', '各品类核销'),
        chart(ctx, 'cities', '各城市核销'),
        chart(ctx, 'leverage', '杠杆率')));
    const money = (field, title) => ({ field, title, money: true });
    const count = (field, title) => ({ field, title, count: true });
    pane.append(table('各出资方资金', [
      { field: 'funder', title: '出资方', header: true, show: (r) => `${regionName(ctx, r.funder)}（${r.funder}）` },
      money('appropriated', '拨付'), money('reserved', '预留'), money('outstanding', '已领未用'),
      money('redeemed', '已核销'), money('held', '暂扣'), money('settled', '已结算'), money('paid', '已付款'), money('available', '可用'),
    ], report.funders, (r) => r.funder));
    pane.append(table('批次', [
      { field: 'name', title: '批次', header: true },
      { field: 'issuer', title: '发放方', show: (r) => regionName(ctx, r.issuer) },
      money('voucher_value', '面值'), count('stock', '库存'), count('claimed', '已领'),
      count('redeemed', '已核销'), count('expired', '已过期'), money('discount_paid', '补贴'),
    ], report.batches, (r) => r.batch_id));
    const sales = [
      count('redemptions', '核销笔数'), count('reversals', '撤销笔数'),
      money('discount', '财政补贴'), money('order_amount', '带动消费'),
    ];
    pane.append(table('各品类核销', [
      { field: 'category', title: '品类', header: true, show: (r) => categoryName(ctx, r.key) }, ...sales,
    ], report.categories, (r) => r.key));
    // By city: the merchants' figures summed per city, in fen.
    const cities = new Map();
    for (const m of report.merchants) {
      const c = cities.get(m.city) || { city: m.city, redemptions: 0, reversals: 0, discount: 0n, order_amount: 0n };
      c.redemptions += m.redemptions;
      c.reversals += m.reversals;
      c.discount += fen(m.discount);
      c.order_amount += fen(m.order_amount);
      cities.set(m.city, c);
    }
    const cityRows = [...cities.values()].sort((a, b) => a.city.localeCompare(b.city))
      .map((c) => ({ ...c, discount: fromFen(c.discount), order_amount: fromFen(c.order_amount) }));
    pane.append(table('各城市核销', [
      { field: 'city', title: '城市', header: true, show: (r) => `${regionName(ctx, r.city)}（${r.city}）` }, ...sales,
    ], cityRows, (r) => r.city));
    pane.append(table('商户', [
      { field: 'name', title: '商户', header: true },
      { field: 'city', title: '城市', show: (r) => regionName(ctx, r.city) },
      { field: 'category', title: '品类', show: (r) => categoryName(ctx, r.category) }, ...sales,
    ], report.merchants, (r) => r.key));
  };

  // Reconciliation checks, by name.
  const CHECKS = {
    ledger_chain: '账本哈希链',
    funder_identity: '出资方资金恒等式',
    batch_counts: '批次券数',
    batch_money: '批次资金',
    merchant_money: '商户资金',
    clearing_after_close: '结季后清算账户',
    card_points: '文惠卡积分',
  };

  const reconciliation = async (pane, ctx) => {
    const found = await ctx.api(`/v1/seasons/${ctx.season.id}/reconciliation`);
    const breaks = found.checks.reduce((n, c) => n + c.breaks, 0);
    pane.append(
      el('p', { class: found.ok ? 'banner ok' : 'banner broken', role: 'status', 'data-field': 'ok' },
        found.ok ? `对账无差异：${found.checks.length} 项检查全部通过。` : `发现 ${breaks} 处差异，详见下表。`),
      el('p', { class: 'note' }, `对账时间 ${when(found.checked_at)}（北京时间）`),
      el('div', { class: 'table-wrap' }, el('table', { class: 'figures checks' },
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, '检查项'), el('th', { scope: 'col' }, '结果'), el('th', { scope: 'col', class: 'num' }, '差异数'), el('th', { scope: 'col' }, '差异明细'))),
        el('tbody', {}, found.checks.map((c) => el('tr', { 'data-key': c.name, class: c.ok ? '' : 'broken' },
          el('th', { scope: 'row' }, CHECKS[c.name] || c.name, el('code', {}, c.name)),
          el('td', { 'data-field': 'ok' }, c.ok ? '通过' : '有差异'),
          el('td', { class: 'num', 'data-field': 'breaks' }, String(c.breaks)),
          el('td', {}, c.listed.length
            ? el('ul', { class: 'breaks' }, c.listed.map((b) => el('li', {}, b)),
              c.breaks > c.listed.length ? el('li', { class: 'note' }, `另有 ${c.breaks - c.listed.length} 处未列出`) : null)
            : '—')))))));
  };

  const STATUS = { complete: '已完成', in_progress: '进行中' };

  // The payout file: fetched with the key, handed to the browser as a download.
  const download = async (ctx, settlement, button) => {
    button.disabled = true;
    try {
      const blob = await ctx.file(`/v1/settlements/${settlement.settlement_id}/payout.csv`);
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: `payout-${settlement.settlement_id}.csv`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (failure) {
      button.after(el('p', { class: 'error', role: 'alert' }, failure.message));
    } finally {
      button.disabled = false;
    }
  };

  // Recording the bank's payout of a settlement: its reference, one write.
  const payoutForm = (ctx, settlement) => {
    const id = `payout-ref-${settlement.settlement_id}`;
    const input = el('input', { id, name: 'payout_ref', maxlength: 100, required: true, autocomplete: 'off', placeholder: '银行付款批次号' });
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const form = el('form', { class: 'inline', 'data-action': 'paid' },
      el('label', { for: id, class: 'sr-only' }, '银行付款批次号'), input,
      el('button', { type: 'submit' }, '记录付款'), error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const payoutRef = input.value.trim();
      if (!payoutRef) return;
      form.querySelector('button').disabled = true;
      try {
        await ctx.write(`paid:${settlement.settlement_id}`, `/v1/settlements/${settlement.settlement_id}/paid`, { body: { payout_ref: payoutRef } });
        ctx.refresh();
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        form.querySelector('button').disabled = false;
      }
    });
    return form;
  };

  const settlements = async (pane, ctx) => {
    const season = ctx.season;
    const page = await ctx.api(`/v1/seasons/${season.id}/settlements?limit=500`);
    const list = page.settlements.slice().reverse();
    if (ctx.may('settle_season') && season.status !== 'closed') {
      const error = el('p', { class: 'error', role: 'alert', hidden: true });
      const run = el('button', { type: 'button', id: 'run-settlement' }, '运行结算');
      run.addEventListener('click', async () => {
        run.disabled = true;
        error.hidden = true;
        // Up to now by the server's clock (to the second): the redemptions not yet settled.
        const cutOff = new Date(Math.floor(wenhui.now() / 1000) * 1000).toISOString();
        try {
          await ctx.write(`settle:${season.id}`, '/v1/settlements', { body: { season_id: season.id, cut_off: cutOff } });
          ctx.refresh();
        } catch (failure) {
          error.textContent = failure.message;
          error.hidden = false;
          run.disabled = false;
        }
      });
      pane.append(el('div', { class: 'card actions' },
        el('p', {}, '结算截至此刻（北京时间）所有未结算、未撤销的核销，每个商户一行；付款文件交银行代发。'), run, error));
    }
    if (!list.length) {
      pane.append(el('p', { class: 'note', id: 'no-settlements' }, '还没有结算。'));
      return;
    }
    const rows = el('tbody', {}, list.map((s) => {
      const actions = el('td', { class: 'actions' });
      if (s.status === 'complete') {
        const get = el('button', { type: 'button', class: 'secondary', 'data-action': 'download' }, '下载付款文件');
        get.addEventListener('click', () => download(ctx, s, get));
        actions.append(get);
        if (!s.paid_at && ctx.may('settle_season')) actions.append(payoutForm(ctx, s));
      }
      return el('tr', { 'data-key': s.settlement_id },
        el('td', { 'data-field': 'created_at' }, when(s.created_at)),
        el('td', { 'data-field': 'cut_off' }, when(s.cut_off)),
        el('td', { class: 'num', 'data-field': 'merchants' }, String(s.merchants)),
        el('td', { class: 'num', 'data-field': 'total' }, yuan(s.total)),
        el('td', { 'data-field': 'status' }, STATUS[s.status] || s.status),
        el('td', { 'data-field': 'paid' }, s.paid_at ? `${when(s.paid_at)} · ${s.payout_ref}` : '未付款'),
        actions);
    }));
    pane.append(el('div', { class: 'table-wrap' }, el('table', { class: 'figures settlements' },
      el('caption', {}, '结算记录（最新在前）'),
      el('thead', {}, el('tr', {}, ['创建时间', '截止时间', '商户数', '金额', '状态', '银行付款', '操作']
        .map((t) => el('th', { scope: 'col' }, t)))),
      rows)));
  };

  // Settlement holds (暂扣结算, docs/settlement-holds.md): the merchants on hold, and their held
  // lines with what finance decided. The province's finance holds a merchant, lifts a hold in
  // force (解除暂扣, with a note: the next settlements pay the merchant), releases a line (paid in
  // the next payout) or proposes its rejection; another person approves a rejection (the button
  // is disabled for the proposer; the server checks people, not keys).
  const HOLD_STATUS = { held: '暂扣中', released: '已放行', rejected: '已拒付' };
  const SOURCE = { manual: '人工', score: '评分' };

  // A note and a button: one write with the note, then the section is drawn again.
  const noteForm = (ctx, { intent, path, label, placeholder, action, required = true }) => {
    const input = el('input', { name: 'note', maxlength: 500, required, autocomplete: 'off', placeholder, 'aria-label': placeholder });
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const button = el('button', { type: 'submit', class: action === 'release' || action === 'lift' ? '' : 'secondary' }, label);
    const form = el('form', { class: 'inline', 'data-action': action }, input, button, error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const note = input.value.trim();
      if (required && !note) return;
      button.disabled = true;
      try {
        await ctx.write(intent, path, { body: { note } });
        ctx.refresh();
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        button.disabled = false;
      }
    });
    return form;
  };

  const holds = async (pane, ctx) => {
    const season = ctx.season;
    const [found, report] = await Promise.all([
      ctx.api(`/v1/seasons/${season.id}/holds`),
      ctx.api(`/v1/seasons/${season.id}/report`),
    ]);
    const decides = ctx.may('settle_season');
    pane.append(el('p', { class: 'note' },
      '被暂扣的商户，其结算行不进入付款文件，资金转入暂扣账户；放行后随下一次结算付款，拒付须由两人办理（一人提出、另一人批准），补贴退回各出资方资金池。解除暂扣后，此后的结算照常付款，已暂扣的结算行仍须放行或拒付；评分不再自动暂扣该商户。'));
    if (decides && season.status !== 'closed') {
      const select = el('select', { id: 'hold-merchant', name: 'merchant_id', required: true },
        el('option', { value: '' }, '选择商户…'),
        report.merchants.map((m) => el('option', { value: m.key }, `${m.name}（${regionName(ctx, m.city)}）`)));
      const reason = el('input', { id: 'hold-reason', name: 'reason', maxlength: 500, required: true, autocomplete: 'off', placeholder: '暂扣原因（如投诉内容）' });
      const error = el('p', { class: 'error', role: 'alert', hidden: true });
      const form = el('form', { class: 'inline', id: 'hold-form', 'data-action': 'hold' },
        el('label', { for: 'hold-merchant', class: 'sr-only' }, '商户'), select,
        el('label', { for: 'hold-reason', class: 'sr-only' }, '暂扣原因'), reason,
        el('button', { type: 'submit' }, '暂扣结算'), error);
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        if (!select.value || !reason.value.trim()) return;
        form.querySelector('button').disabled = true;
        try {
          await ctx.write(`hold:${season.id}:${select.value}`, `/v1/seasons/${season.id}/holds`,
            { body: { merchant_id: select.value, reason: reason.value.trim() } });
          ctx.refresh();
        } catch (failure) {
          error.textContent = failure.message;
          error.hidden = false;
          form.querySelector('button').disabled = false;
        }
      });
      pane.append(el('div', { class: 'card actions' }, el('p', {}, '暂扣一家商户本季此后的结算：'), form));
    }
    pane.append(table('暂扣商户', [
      { field: 'merchant_name', title: '商户', header: true },
      { field: 'source', title: '来源', show: (h) => (h.source === 'score' ? `评分 ${h.score}` : SOURCE[h.source] || h.source) },
      { field: 'reason', title: '原因' },
      { field: 'held_at', title: '暂扣时间', show: (h) => when(h.held_at) },
      { field: 'in_force', title: '状态', show: (h) => (h.in_force ? '暂扣中' : '已解除') },
      { field: 'lift_note', title: '解除说明', show: (h) => (h.in_force ? null : `${h.lift_note}（${when(h.lifted_at)}）`) },
      { field: 'actions', title: '操作', node: (h) => (decides && h.in_force && season.status !== 'closed'
        ? noteForm(ctx, { intent: `lift:${season.id}:${h.merchant_id}`, path: `/v1/seasons/${season.id}/holds/${h.merchant_id}/lift`,
          label: '解除暂扣', placeholder: '解除说明（核实情况）', action: 'lift' })
        : null) },
    ], found.holds, (h) => h.merchant_id, 'holds'));
    const lines = el('tbody', {}, found.lines.length ? found.lines.map((l) => {
      const actions = el('td', { class: 'actions' });
      const base = `/v1/settlements/${l.settlement_id}/holds/${l.merchant_id}`;
      const intent = (what) => `${what}:${l.settlement_id}:${l.merchant_id}`;
      if (decides && l.status === 'held') {
        actions.append(noteForm(ctx, { intent: intent('release'), path: `${base}/release`, label: '放行', placeholder: '放行说明', action: 'release' }));
        if (!l.reject_proposed_by) {
          actions.append(noteForm(ctx, { intent: intent('reject'), path: `${base}/reject`, label: '提出拒付', placeholder: '拒付原因（告知商户）', action: 'propose-reject' }));
        } else {
          const mine = l.reject_proposed_by === ctx.me.key_id;
          const approve = el('button', { type: 'button', class: 'secondary', 'data-action': 'approve-reject', disabled: mine,
            title: mine ? '拒付须由另一人批准' : '' }, mine ? '待他人批准拒付' : '批准拒付');
          const error = el('p', { class: 'error', role: 'alert', hidden: true });
          approve.addEventListener('click', async () => {
            approve.disabled = true;
            try {
              await ctx.write(intent('approve'), `${base}/reject/approve`);
              ctx.refresh();
            } catch (failure) {
              error.textContent = failure.message;
              error.hidden = false;
              approve.disabled = false;
            }
          });
          actions.append(approve, error);
        }
      }
      const notes = [
        l.release_note ? `放行：${l.release_note}` : null,
        l.reject_note ? `拒付${l.status === 'rejected' ? '' : '（待批准）'}：${l.reject_note}` : null,
        l.status === 'released' ? (l.paid ? '已随后续结算付款' : l.paid_in_settlement_id ? '已列入下一付款文件' : '等待下一次结算') : null,
      ].filter(Boolean);
      const actionsCell = actions.childElementCount ? actions : el('td', { 'data-field': 'actions' }, '—');
      return el('tr', { 'data-key': `${l.settlement_id}:${l.merchant_id}`, 'data-status': l.status },
        el('th', { scope: 'row', 'data-field': 'merchant_name' }, l.merchant_name),
        el('td', { 'data-field': 'settled_at' }, when(l.settled_at)),
        el('td', { class: 'num', 'data-field': 'amount' }, yuan(l.amount)),
        el('td', { 'data-field': 'status' }, HOLD_STATUS[l.status] || l.status),
        el('td', { 'data-field': 'reason' }, l.reason),
        el('td', { 'data-field': 'notes' }, notes.length ? notes.join('；') : '—'),
        actionsCell);
    }) : el('tr', {}, el('td', { colspan: 7, class: 'empty' }, '暂无暂扣的结算行')));
    pane.append(el('div', { class: 'table-wrap' }, el('table', { class: 'figures held-lines' },
      el('caption', {}, '暂扣的结算行'),
      el('thead', {}, el('tr', {}, ['商户', '结算时间', '金额', '状态', '暂扣原因', '处理说明', '操作']
        .map((t) => el('th', { scope: 'col' }, t)))),
      lines)));
  };

  // Closing the season, after a confirmation that names it.
  const close = async (pane, ctx) => {
    const season = ctx.season;
    if (season.status === 'closed') {
      pane.append(el('p', { class: 'banner ok', 'data-field': 'closed' }, `${season.name} 已结季。`));
      return;
    }
    pane.append(el('p', {}, `${season.name}：活动期 ${when(season.starts_at)} 至 ${when(season.ends_at)}（北京时间）。`),
      el('p', { class: 'note' }, '结季会先完成进行中的结算，再关闭活动季、对账、签发账本检查点并保存结季报告。结季后不能再领券、核销或结算，且不可撤销。'));
    const start = el('button', { type: 'button', id: 'close-season' }, '结束活动季…');
    const input = el('input', { id: 'close-confirm-name', autocomplete: 'off' });
    const confirm = el('button', { type: 'button', id: 'close-confirm', disabled: true }, '确认结季');
    const cancel = el('button', { type: 'button', class: 'secondary' }, '取消');
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const box = el('div', { class: 'card confirm', hidden: true, role: 'group', 'aria-labelledby': 'close-confirm-label' },
      el('label', { for: 'close-confirm-name', id: 'close-confirm-label' }, `请输入活动季名称“${season.name}”以确认结季`),
      input, el('div', { class: 'buttons' }, confirm, cancel), error);
    start.addEventListener('click', () => {
      box.hidden = false;
      start.hidden = true;
      input.focus();
    });
    cancel.addEventListener('click', () => {
      box.hidden = true;
      start.hidden = false;
      input.value = '';
      confirm.disabled = true;
    });
    input.addEventListener('input', () => {
      confirm.disabled = input.value.trim() !== season.name;
    });
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      error.hidden = true;
      try {
        const outcome = await ctx.write(`close:${season.id}`, `/v1/seasons/${season.id}/close`);
        season.status = 'closed';
        box.replaceWith(el('p', { class: outcome.reconciled && outcome.breaks === 0 ? 'banner ok' : 'banner broken', 'data-field': 'closed' },
          `已结季（${when(outcome.closed_at)}），账本检查点 #${outcome.checkpoint_seq}，`,
          outcome.breaks === 0 ? '对账无差异。' : `对账发现 ${outcome.breaks} 处差异。`));
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        confirm.disabled = false;
      }
    });
    pane.append(start, box);
  };

  // Cash-out (套现) risk: each merchant's score (0 to 100) and the reasons behind it, as the
  // server explains them in Chinese (GET /v1/seasons/{id}/fraud/scores), highest first.
  const SIGNALS = {
    at_threshold: '门槛整额',
    hourly_rate: '核销过密',
    repeat_citizens: '同人反复',
    distinct_burst: '短时多人',
    reversals: '核销后撤销',
    odd_hours: '非营业时段',
    far_and_fast: '外地即领即用',
  };
  const level = (score) => (score >= 60 ? 'high' : score >= 20 ? 'medium' : 'low');
  const LEVELS = { high: '高风险', medium: '需关注', low: '正常' };

  const risk = async (pane, ctx) => {
    const page = await ctx.api(`/v1/seasons/${ctx.season.id}/fraud/scores?limit=200`);
    const high = page.merchants.filter((m) => m.score >= 60).length;
    pane.append(
      el('p', { class: high ? 'banner broken' : 'banner ok', role: 'status', 'data-field': 'high' },
        high ? `${high} 家商户风险评分达 60 分以上，请核查其核销记录。` : '没有商户风险评分达 60 分。'),
      el('p', { class: 'note' }, `依据截至 ${when(page.until)}（北京时间）的 ${page.redemptions} 笔核销计算；`,
        '分数 0–100，由七项信号加权得出，同样的数据总得到同样的分数。分数高不等于认定套现，请结合原因核查。'));
    const rows = page.merchants.map((m) => el('tr', { 'data-key': m.merchant_id, class: `risk-${level(m.score)}` },
      el('td', { class: 'num', 'data-field': 'score' },
        el('span', { class: `score ${level(m.score)}` }, String(m.score)), el('span', { class: 'sr-only' }, LEVELS[level(m.score)])),
      el('th', { scope: 'row', 'data-field': 'name' }, m.merchant_name || m.merchant_id),
      el('td', { 'data-field': 'city' }, regionName(ctx, m.merchant_city)),
      el('td', { 'data-field': 'category' }, categoryName(ctx, m.category)),
      el('td', { class: 'num', 'data-field': 'redemptions' }, String(m.redemptions)),
      el('td', { 'data-field': 'reasons' }, m.reasons.length
        ? el('ul', { class: 'reasons' }, m.reasons.map((r) => el('li', { 'data-signal': r.signal },
          el('strong', {}, `${SIGNALS[r.signal] || r.signal} +${r.points}`), '：', r.explanation_zh)))
        : '未见异常')));
    pane.append(el('div', { class: 'table-wrap' }, el('table', { class: 'figures risk' },
      el('caption', {}, '商户风险评分（高分在前）'),
      el('thead', {}, el('tr', {}, ['分数', '商户', '城市', '品类', '核销笔数', '原因']
        .map((t) => el('th', { scope: 'col' }, t)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 6, class: 'empty' }, '暂无核销'))))));
    if (page.next_after) pane.append(el('p', { class: 'note' }, `只列出分数最高的 ${page.merchants.length} 家（共 ${page.merchants_matching} 家）。`));
  };

  section('dashboard', '活动看板', dashboard, { needs: 'read_season_finance' });
  section('reconciliation', '对账', reconciliation, { needs: 'reconcile_season' });
  section('settlements', '结算', settlements, { needs: 'read_season_finance' });
  section('close', '结季', close, { needs: 'settle_season' });
  section('risk', '风险评分', risk, { needs: 'read_season_finance' });
  section('holds', '暂扣结算', holds, { needs: 'read_season_finance' });
})();
