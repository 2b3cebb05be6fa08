// 文惠 · 收银台: the till page. Talks only to this till process's /api/ (each call carries
// the page's per-run token); the process signs, retries and journals every call to the service.
'use strict';
(() => {
  const token = document.querySelector('meta[name="till-token"]').content;
  const $ = (id) => document.getElementById(id);
  const scan = $('scan'), amount = $('amount'), orderRef = $('order-ref');
  const scanned = []; // {qr, kind, seconds_left}
  let messages = {};
  let busy = false;
  let armed = null; // the journal row whose 撤销 was pressed once (the next press confirms)
  let shownRows = '';
  let followed = null; // the Idempotency-Key of this order's step whose answer is pending
  // The quote shown for this order: what it was asked for, and how it came back (quoted, refused
  // or unavailable). Any change to the codes, the amount or the reference drops it.
  let quoted = null;

  async function api(path, body) {
    const options = { headers: { 'X-Till-Token': token }, cache: 'no-store' };
    if (body !== undefined) {
      options.method = 'POST';
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (!response.ok) throw new Error('till ' + response.status);
    return response.json();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function show(node, text, pending) {
    node.textContent = text || '';
    node.hidden = !text;
    node.classList.toggle('pending', !!pending);
  }

  function newOrderRef() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, '0');
    return 'T' + d.getFullYear() + p(d.getMonth() + 1) + p(d.getDate()) + '-' + p(d.getHours()) + p(d.getMinutes()) + p(d.getSeconds());
  }

  const kindName = { voucher: '消费券', card: '文惠卡' };

  function orderAsked() {
    return JSON.stringify([scanned.map((s) => s.qr), amount.value.trim(), orderRef.value.trim()]);
  }

  function dropQuote() {
    quoted = null;
    $('quote').hidden = true;
    $('confirm').disabled = false;
    $('confirm').textContent = '确认收款';
  }

  // Before the cashier confirms an order with a voucher: the voucher's terms and, from the
  // service's quote (nothing written, the code not spent), the discount and the amount to
  // collect. A refusal shows now, and the order cannot be confirmed with that voucher (去掉 it to
  // take the full amount, or have the customer refresh the code). With no network the quote is
  // unavailable: the cashier may still confirm (the till journals the order and resends it).
  async function showQuote(asked) {
    const answer = await api('/api/quote', {
      codes: scanned.map((s) => s.qr), amount: amount.value.trim(), order_ref: orderRef.value.trim(),
    });
    if (answer.status === 'none') return false;
    quoted = { asked, status: answer.status };
    const box = $('quote');
    const terms = $('quote-terms'), where = $('quote-where'), lines = $('quote-lines');
    const collect = $('quote-collect'), label = $('quote-collect-label');
    box.className = 'quote ' + answer.status;
    terms.textContent = answer.terms || '';
    terms.hidden = !answer.terms;
    where.textContent = answer.terms ? answer.where + ' · 有效期至 ' + answer.until : '';
    where.hidden = !answer.terms;
    show($('quote-message'), answer.status === 'quoted' ? '' : answer.message, answer.status === 'unavailable');
    let text = '';
    if (answer.status === 'quoted') {
      text = '订单金额 ' + answer.order_amount + (answer.after_card
        ? ' · 先刷文惠卡享会员优惠，消费券按刷卡后金额计算'
        : ' · 消费券优惠 ' + answer.discount);
    } else if (answer.status === 'refused') {
      text = '这张消费券不能用于本单：点“去掉”可按原价收款，或请顾客刷新后重扫。';
    }
    lines.textContent = text;
    lines.hidden = !text;
    const sure = answer.status === 'quoted' && !answer.after_card;
    collect.textContent = sure ? answer.collect : '';
    collect.hidden = !sure;
    label.hidden = !sure;
    box.hidden = false;
    const confirm = $('confirm');
    confirm.disabled = answer.status === 'refused';
    confirm.textContent = answer.status === 'unavailable' ? '仍然确认收款' : '确认收款';
    if (!confirm.disabled) confirm.focus();
    return true;
  }

  function renderScanned() {
    dropQuote();
    const list = $('scanned');
    list.replaceChildren();
    for (const [i, item] of scanned.entries()) {
      const li = el('li', 'code ' + item.kind);
      li.append(el('span', 'what', kindName[item.kind] + ' · 已用缓存密钥离线核验 · ' + item.seconds_left + ' 秒内有效'));
      const remove = el('button', 'remove', '去掉');
      remove.type = 'button';
      remove.addEventListener('click', () => { scanned.splice(i, 1); renderScanned(); scan.focus(); });
      li.append(remove);
      list.append(li);
    }
  }

  async function onScan() {
    const qr = scan.value.trim();
    scan.value = '';
    if (!qr) return;
    show($('scan-message'), '');
    try {
      const answer = await api('/api/scan', { qr });
      if (answer.status !== 'valid') {
        show($('scan-message'), answer.message, answer.status === 'pending');
        return;
      }
      const same = scanned.findIndex((s) => s.kind === answer.kind);
      if (same >= 0) scanned.splice(same, 1);
      scanned.push({ qr, kind: answer.kind, seconds_left: answer.seconds_left });
      scanned.sort((a, b) => (a.kind === 'card' ? -1 : 1) - (b.kind === 'card' ? -1 : 1));
      renderScanned();
      if (!orderRef.value) orderRef.value = newOrderRef();
      amount.focus();
      amount.select();
    } catch (e) {
      show($('scan-message'), '收银台程序没有响应，请确认 wenhui-till ui 仍在运行。');
    }
  }

  function resultLine(label, step) {
    if (!step) return null;
    let text;
    if (step.status === 'done') {
      text = label + '：' + (step.discount ? '优惠 ' + step.discount : '会员优惠 ' + step.member_discount +
        (step.points_earned ? '，积分 +' + step.points_earned : ''));
    } else {
      text = label + '：' + step.message;
    }
    return el('p', 'line ' + step.status, text);
  }

  async function confirmOrder() {
    if (busy) return;
    const message = $('scan-message');
    if (!scanned.length) { show(message, messages.nothing_scanned); scan.focus(); return; }
    if (!/^\d+(\.\d{1,2})?$/.test(amount.value.trim()) || Number(amount.value) <= 0) {
      show(message, messages.amount_invalid); amount.focus(); return;
    }
    if (!orderRef.value.trim()) { show(message, messages.order_ref_invalid); orderRef.focus(); return; }
    busy = true;
    $('confirm').disabled = true;
    show(message, '');
    const asked = orderAsked();
    if (scanned.some((s) => s.kind === 'voucher') && (!quoted || quoted.asked !== asked)) {
      try {
        if (await showQuote(asked)) return;
      } catch (e) {
        show(message, '收银台程序没有响应，请确认 wenhui-till ui 仍在运行。');
        return;
      } finally {
        busy = false;
        if (!quoted || quoted.status !== 'refused') $('confirm').disabled = false;
      }
      busy = true;
    }
    if (quoted && quoted.status === 'refused') { busy = false; return; }
    try {
      const answer = await api('/api/order', {
        codes: scanned.map((s) => s.qr), amount: amount.value.trim(), order_ref: orderRef.value.trim(),
      });
      if (answer.status === 'refused') {
        show(message, answer.error.message, answer.error.status === 'pending');
        return;
      }
      const lines = $('result-lines');
      lines.replaceChildren(el('p', 'line', '订单 ' + answer.order_ref + ' · 订单金额 ' + answer.order_amount));
      const card = resultLine('文惠卡', answer.card);
      const voucher = resultLine('消费券', answer.voucher);
      if (card) lines.append(card);
      if (voucher) lines.append(voucher);
      if (answer.journal_warning) lines.append(el('p', 'line refused', answer.journal_warning));
      $('collect').textContent = answer.collect || '待确认';
      const open = [answer.voucher, answer.card].find((step) => step && step.status === 'pending' && step.key);
      followed = open ? open.key : null;
      $('order').hidden = true;
      dropQuote();
      $('result').hidden = false;
      $('next').focus();
      loadJournal(true);
    } catch (e) {
      show(message, '收银台程序没有响应，请确认 wenhui-till ui 仍在运行。');
    } finally {
      busy = false;
      $('confirm').disabled = false;
    }
  }

  function clearOrder() {
    scanned.length = 0;
    renderScanned();
    amount.value = '';
    orderRef.value = '';
    dropQuote();
    show($('scan-message'), '');
    $('result').hidden = true;
    $('order').hidden = false;
    followed = null;
    scan.focus();
  }

  const stateText = { done: '成功', refused: '未通过', pending: '待确认（自动重试中）' };

  async function reverseLine(row, button) {
    if (armed !== row.id) {
      armed = row.id;
      button.textContent = '确认撤销';
      button.classList.add('sure');
      return;
    }
    armed = null;
    button.disabled = true;
    const reason = $('reason').value.trim();
    const answer = await api('/api/reverse', { op: row.op, id: row.id, reason }).catch(() => null);
    if (!answer) {
      show($('journal-message'), '收银台程序没有响应，请确认 wenhui-till ui 仍在运行。');
    } else if (answer.status !== 'done') {
      show($('journal-message'), answer.message, answer.status === 'pending');
    } else {
      show($('journal-message'), '');
    }
    loadJournal(true);
  }

  async function loadJournal(force) {
    let answer;
    try {
      answer = await api('/api/journal');
    } catch (e) {
      $('net').textContent = '收银台程序没有响应';
      $('net').classList.add('down');
      shownRows = '';
      return;
    }
    const rows = answer.lines || [];
    const seen = JSON.stringify(rows);
    if (!force && seen === shownRows) return;
    shownRows = seen;
    const body = $('lines');
    body.replaceChildren();
    let pending = 0;
    for (const row of rows) {
      const tr = el('tr', 'line-row ' + row.status + (row.reversed ? ' reversed' : ''));
      tr.dataset.key = row.key;
      if (row.id) tr.dataset.id = row.id;
      tr.append(el('td', '', row.time), el('td', '', row.kind), el('td', 'ref', row.order_ref),
        el('td', 'amount', row.order_amount), el('td', 'amount discount', row.discount || ''),
        el('td', 'amount pay', row.collect || ''));
      let state = stateText[row.status];
      if (row.reversed) state = '已撤销';
      else if (row.reversing) state = '撤销待确认';
      const stateCell = el('td', 'state ' + row.status, state);
      if (row.message && row.status !== 'done') stateCell.title = row.message;
      if (row.status === 'refused') stateCell.textContent = '未通过：' + row.message;
      if (row.status === 'pending') pending += 1;
      tr.append(stateCell);
      const action = el('td', 'action');
      if (row.status === 'done' && !row.reversed && !row.reversing) {
        const sure = armed === row.id;
        const button = el('button', 'small reverse' + (sure ? ' sure' : ''), sure ? '确认撤销' : '撤销');
        button.type = 'button';
        button.addEventListener('click', () => reverseLine(row, button));
        action.append(button);
      }
      tr.append(action);
      body.append(tr);
    }
    $('empty').hidden = rows.length > 0;
    const answered = followed && rows.find((row) => row.key === followed && row.status !== 'pending');
    if (answered) {
      followed = null;
      const done = answered.status === 'done';
      $('result-lines').append(el('p', 'line ' + (done ? 'done' : 'refused'),
        (done ? '网络恢复，已补发成功：优惠 ' + answered.discount : '补发结果：' + answered.message)));
      if (done) $('collect').textContent = answered.collect;
    }
    const net = $('net');
    net.textContent = pending ? pending + ' 笔待确认：网络恢复后自动补发' : '';
    net.classList.toggle('down', pending > 0);
  }

  scan.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') { event.preventDefault(); onScan(); }
  });
  amount.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') { event.preventDefault(); orderRef.focus(); orderRef.select(); }
  });
  for (const field of [amount, orderRef]) {
    field.addEventListener('input', () => { if (quoted) dropQuote(); });
  }
  $('order').addEventListener('submit', (event) => { event.preventDefault(); confirmOrder(); });
  $('clear').addEventListener('click', clearOrder);
  $('next').addEventListener('click', clearOrder);
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') clearOrder(); });

  api('/api/state').then((state) => { messages = state.messages || {}; }).catch(() => {});
  loadJournal();
  setInterval(loadJournal, 5000);
  scan.focus();
})();
