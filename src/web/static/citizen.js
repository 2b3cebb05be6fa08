'use strict';
// The citizen's page: the open and upcoming batches of the current seasons, their terms in plain
// words, where they can be used, the stock left, and a countdown to each opening on the
// server's clock.
(() => {
  const { el, plain, isZero, cst, countdown } = wenhui;
  const main = document.getElementById('batches');

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
    state(batch));

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
  };

  const load = async () => {
    const [names, page] = await Promise.all([wenhui.names(), wenhui.api('/v1/seasons')]);
    const current = page.seasons.filter((s) => s.status === 'open' || s.status === 'scheduled');
    const batches = await Promise.all(current.map((s) => wenhui.api(`/v1/seasons/${s.id}/batches`)));
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

  setInterval(tick, 200);
  load()
    .catch((error) => main.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message || '出错了，请稍后再试。')))
    .finally(() => main.removeAttribute('aria-busy'));
})();
