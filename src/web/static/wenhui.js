'use strict';
// Shared by every page: the server's clock, the JSON API with Chinese error messages, names of
// codes, and amounts and times as a Chinese reader expects them. No money is computed here:
// amounts arrive as yuan decimal strings and are only re-written, digit by digit.
const wenhui = (() => {
  // The server's time when it answered the page, and when (on this page's monotonic clock) the
  // answer began to arrive: the server's time now is their sum; the phone's clock is not read.
  const meta = document.querySelector('meta[name="wenhui-now"]');
  let served = meta ? Number(meta.content) : NaN;
  const navigation = performance.getEntriesByType('navigation')[0];
  let anchor = navigation ? navigation.responseStart : 0;
  const now = () => served + (performance.now() - anchor);
  // The server's time said in an answer's body (the batch list's server_time): taken when the
  // page carried none, so that the countdown still runs on the server's clock, not the phone's.
  const observe = (serverTime) => {
    const at = Date.parse(serverTime);
    if (Number.isFinite(served) || !Number.isFinite(at)) return;
    served = at;
    anchor = performance.now();
  };

  class ApiError extends Error {
    constructor(status, code, message, retryAfter = null, detail = '') {
      super(message);
      this.status = status;
      this.code = code;
      // The API's own words (English): which field it refused, for a hint next to that field.
      this.detail = detail;
      // Seconds to wait before the same request again (a 429's Retry-After), or null.
      this.retryAfter = retryAfter;
    }
  }

  const once = (load) => {
    let loaded = null;
    return () => (loaded = loaded || load());
  };
  const json = async (path) => {
    const response = await fetch(path);
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  };
  const messages = once(() => json('/assets/messages.json').catch(() => ({})));
  const names = once(() => json('/assets/names.json'));

  const NETWORK = '网络不通，请检查网络后重试。';
  const UNKNOWN = '出错了，请稍后再试。';

  // The plain Chinese message for an API error code.
  const messageFor = async (code) => (await messages())[code] || UNKNOWN;

  // A call to the JSON API; a refusal becomes an ApiError carrying the Chinese message.
  // A cached answer is revalidated (its ETag: a 304 if unchanged), never taken as it is: a page
  // that just wrote, or was reloaded, reads what is now. `cache: 'default'` would let the
  // browser answer from its cache while the answer is fresh.
  const api = async (path, { method = 'GET', key = null, body = undefined, idempotencyKey = null, cache = 'no-cache' } = {}) => {
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, { method, headers, cache, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (_) {
      throw new ApiError(0, 'network', NETWORK);
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (_) {
      parsed = null;
    }
    if (!response.ok) {
      const code = (parsed && parsed.error && parsed.error.code) || 'internal';
      const retry = Number(response.headers.get('Retry-After'));
      const detail = (parsed && parsed.error && parsed.error.message) || '';
      throw new ApiError(response.status, code, await messageFor(code), Number.isFinite(retry) && retry > 0 ? retry : null, detail);
    }
    return parsed;
  };

  // '1234.5' or '1234.50' → ['', '1234', '50']; null if it is not a decimal amount.
  const parts = (text) => {
    const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(text));
    return m ? [m[1], m[2].replace(/^0+(?=\d)/, ''), (m[3] || '').padEnd(2, '0')] : null;
  };
  // '1234.50' → '¥1,234.50'.
  const yuan = (text) => {
    const p = parts(text);
    if (!p) return String(text);
    return `${p[0]}¥${p[1].replace(/\B(?=(\d{3})+(?!\d))/g, ',')}.${p[2]}`;
  };
  // '100.00' → '100', '12.50' → '12.5': an amount in a sentence (满100减30).
  const plain = (text) => {
    const p = parts(text);
    if (!p) return String(text);
    const cents = p[2].replace(/0+$/, '');
    return `${p[0]}${p[1]}${cents ? `.${cents}` : ''}`;
  };
  const isZero = (text) => /^0+(\.0*)?$/.test(String(text));

  // China Standard Time fields of an instant (ms), whatever the phone's time zone.
  const cstFields = (ms) => {
    const d = new Date(ms + 8 * 3600 * 1000);
    return { y: d.getUTCFullYear(), mo: d.getUTCMonth() + 1, d: d.getUTCDate(), h: d.getUTCHours(), mi: d.getUTCMinutes() };
  };
  const two = (n) => String(n).padStart(2, '0');
  // '3月1日 10:00' (Beijing time).
  const cst = (ms) => {
    const f = cstFields(ms);
    return `${f.mo}月${f.d}日 ${two(f.h)}:${two(f.mi)}`;
  };
  // A duration in ms, rounded up to the second: '2天 03:04:05', '00:00:59'.
  const countdown = (ms) => {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const days = Math.floor(total / 86400);
    const clock = `${two(Math.floor((total % 86400) / 3600))}:${two(Math.floor((total % 3600) / 60))}:${two(total % 60)}`;
    return days ? `${days}天 ${clock}` : clock;
  };

  // An element with attributes and children (strings become text: nothing is parsed as HTML).
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'class') node.className = value;
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  };

  // A fresh random key (hex), for an Idempotency-Key.
  const randomKey = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');

  return { now, observe, api, randomKey, ApiError, messageFor, names, yuan, plain, isZero, cst, countdown, el };
})();
