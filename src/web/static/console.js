'use strict';
// The finance console's sign-in: a staff key, checked against GET /v1/staff/me and kept in this
// tab's session storage only; the key is sent as a bearer token.
(() => {
  const { el } = wenhui;
  const STORE = 'wenhui.staffKey';
  const form = document.getElementById('sign-in');
  const input = document.getElementById('staff-key');
  const error = document.getElementById('sign-in-error');
  const who = document.getElementById('who');
  const signOut = document.getElementById('sign-out');

  const signIn = async (key) => {
    error.hidden = true;
    try {
      const [me, names] = await Promise.all([wenhui.api('/v1/staff/me', { key }), wenhui.names()]);
      sessionStorage.setItem(STORE, key);
      form.hidden = true;
      signOut.hidden = false;
      const region = names.regions[me.region] || me.region;
      who.replaceChildren(
        el('h2', {}, '已登录'),
        el('p', { class: 'who' }, `${region}（${me.region}） · ${names.roles[me.role] || me.role}`),
        el('p', { class: 'note' }, '活动看板、对账、结算和商户管理将在这里提供。'));
      who.hidden = false;
    } catch (failure) {
      sessionStorage.removeItem(STORE);
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
  signOut.addEventListener('click', () => {
    sessionStorage.removeItem(STORE);
    window.location.reload();
  });
  const saved = sessionStorage.getItem(STORE);
  if (saved) signIn(saved);
})();
