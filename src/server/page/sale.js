// The buyer page of one activity (served at /sale/{id}; the server fills in data-activity
// and data-auth on <body>).
//
// - Time is the server's: a few GET /api/v1/time samples, the one with the shortest round
//   trip kept, its reading taken as made halfway through the trip. From then on the server's
//   time is that reading plus performance.now() elapsed, a monotonic clock the buyer cannot
//   set: a PC clock that is wrong (or changed meanwhile) moves neither the countdown nor the
//   moment the button enables. Date.now() is never used.
// - The buy button enables at the start by server time. A click disables it before anything
//   else happens; it stays disabled while the request is in flight, and for good after
//   `queued`. So one click is one request, and no burst of clicks makes more.
// - The purchase token is fetched when the sale opens (the token endpoint hands them out from
//   token.open_before_secs before the start), or at the first click when no user is known yet.
// - After `queued`, and after a buy that got no answer, the page asks
//   GET /api/v1/activities/{id}/result, backing off, until every order is persisted.
'use strict';

(function () {
  const body = document.body;
  const activityId = Number(body.dataset.activity);
  const authMode = body.dataset.auth;
  const $ = (id) => document.getElementById(id);

  const BUY_TIMEOUT_MS = 10000;
  const REFRESH_MS = 5000;
  const RESYNC_MS = 30000;
  const CLOCK_SAMPLES = 5;

  // ------------------------------------------------------------------ the server's clock

  let clock = null; // {serverMs, perfMs, rtt}: the server's time at performance.now() = perfMs

  function serverNow() {
    return clock.serverMs + (performance.now() - clock.perfMs);
  }

  async function syncClock(samples) {
    let best = null;
    for (let i = 0; i < samples; i++) {
      const sent = performance.now();
      let answer;
      try {
        answer = await call('GET', '/api/v1/time');
      } catch (e) {
        continue;
      }
      const received = performance.now();
      if (!answer.ok || typeof answer.body.server_time_ms !== 'number') continue;
      const rtt = received - sent;
      if (best === null || rtt < best.rtt) {
        best = { rtt, serverMs: answer.body.server_time_ms + rtt / 2, perfMs: received };
      }
    }
    if (best !== null && (clock === null || best.rtt <= clock.rtt * 2 + 5)) clock = best;
    if (clock !== null) body.dataset.clockRttMs = clock.rtt.toFixed(1);
    return clock !== null;
  }

  // ------------------------------------------------------------------ HTTP

  let jwt = null;

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // One request; resolves to {ok, status, body} for any HTTP answer, rejects when none came
  // (network failure, or no answer within timeoutMs).
  async function call(method, path, payload, timeoutMs) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs || 10000);
    const headers = {};
    if (payload !== undefined) headers['content-type'] = 'application/json';
    if (jwt !== null) headers.authorization = 'Bearer ' + jwt;
    try {
      const res = await fetch(path, {
        method,
        headers,
        body: payload === undefined ? undefined : JSON.stringify(payload),
        signal: controller.signal,
        cache: 'no-store',
        credentials: 'omit',
      });
      let json = null;
      try {
        json = await res.json();
      } catch (e) {
        json = null;
      }
      return { ok: res.ok, status: res.status, body: json || {} };
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------------ who is buying

  let me = null; // jwt and gateway modes: the buyer as the server knows them

  function readJwt() {
    const found = location.hash.match(/(?:^#|&)jwt=([^&]+)/);
    if (found) {
      jwt = decodeURIComponent(found[1]);
      try {
        localStorage.setItem('seckill.jwt', jwt);
      } catch (e) { /* storage off: keep it for this page only */ }
      // Out of the address bar (and of bookmarks and screenshots).
      history.replaceState(null, '', location.pathname + location.search);
    } else {
      try {
        jwt = localStorage.getItem('seckill.jwt');
      } catch (e) {
        jwt = null;
      }
    }
  }

  function userId() {
    return authMode === 'none' ? $('user').value.trim() : me;
  }

  // ------------------------------------------------------------------ what the page shows

  let activity = null;
  let open = false;
  let inFlight = false;
  let checking = false; // a buy got no answer: wait for the result before allowing another
  let done = false; // queued, or refused for good: no more buying from this page
  let coolUntil = 0; // performance.now() before which buying waits (after busy, 429)
  const refused = new Set(); // products this buyer cannot buy (sold out, limit reached)
  const tokens = new Map(); // user -> Promise of the token

  function say(text, tone) {
    const m = $('message');
    m.textContent = text;
    m.className = 'message' + (tone ? ' ' + tone : '');
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function formatLeft(ms) {
    const s = Math.ceil(ms / 1000);
    const h = Math.floor(s / 3600);
    return (h > 0 ? h + ':' : '') + pad(Math.floor((s % 3600) / 60)) + ':' + pad(s % 60);
  }

  function renderProducts() {
    const list = $('products');
    for (const p of activity.products) {
      let li = $('product-' + p.id);
      if (li === null) {
        li = document.createElement('li');
        li.id = 'product-' + p.id;
        li.className = 'product';
        const name = document.createElement('span');
        name.className = 'name';
        const price = document.createElement('span');
        price.className = 'price';
        const remaining = document.createElement('span');
        remaining.className = 'remaining';
        const button = document.createElement('button');
        button.type = 'button';
        button.id = 'buy-' + p.id;
        button.className = 'buy';
        button.dataset.product = String(p.id);
        button.disabled = true;
        button.addEventListener('click', () => buy(p.id));
        li.append(name, button, price, remaining);
        list.append(li);
      }
      li.querySelector('.name').textContent = p.name;
      li.querySelector('.price').textContent = '¥' + p.price;
      const soldOut = p.remaining <= 0;
      li.querySelector('.remaining').textContent = soldOut
        ? 'Sold out'
        : p.remaining + ' of ' + p.total + ' left (at most ' + p.per_user_limit + ' per buyer)';
      li.classList.toggle('sold-out', soldOut);
    }
    updateButtons();
  }

  function updateButtons() {
    if (activity === null) return;
    const stopped = activity.status === 'paused' || activity.status === 'ended' || activity.status === 'lost';
    const cooling = performance.now() < coolUntil;
    for (const p of activity.products) {
      const button = $('buy-' + p.id);
      const soldOut = p.remaining <= 0;
      button.disabled = !open || stopped || inFlight || checking || done || cooling || soldOut || refused.has(p.id);
      button.textContent = soldOut ? 'Sold out' : inFlight ? 'Buying…' : open ? 'Buy now' : 'Not yet';
    }
  }

  function tick() {
    const now = serverNow();
    const countdown = $('countdown');
    const left = activity.start_ms - now;
    let next = 1000;
    if (now >= activity.end_ms) {
      open = false;
      countdown.textContent = 'This sale has ended.';
      countdown.dataset.remainingMs = '0';
    } else if (left > 0) {
      open = false;
      countdown.textContent = 'Opens in ' + formatLeft(left);
      countdown.dataset.remainingMs = String(Math.round(left));
      // Wake at the start itself, not at the next whole tick.
      next = Math.min(left, 250);
    } else {
      const said = { paused: 'The sale is paused.', ended: 'This sale has ended.', lost: 'The sale is temporarily unavailable.' };
      countdown.textContent = said[activity.status] || 'On sale now';
      countdown.dataset.remainingMs = '0';
      countdown.classList.add('open');
      if (!open) {
        open = true;
        updateButtons();
        const user = userId();
        if (user) getToken(user).catch(() => {});
      }
      next = Math.min(1000, Math.max(0, activity.end_ms - now));
    }
    updateButtons();
    setTimeout(tick, next);
  }

  async function refresh() {
    try {
      const r = await call('GET', '/api/v1/activities/' + activityId);
      if (r.ok) {
        activity = r.body;
        $('name').textContent = activity.name;
        document.title = activity.name;
        renderProducts();
      }
    } catch (e) { /* the next refresh tries again */ }
  }

  // ------------------------------------------------------------------ buying

  function getToken(user) {
    let token = tokens.get(user);
    if (token === undefined) {
      token = fetchToken(user);
      tokens.set(user, token);
      token.catch(() => tokens.delete(user));
    }
    return token;
  }

  async function fetchToken(user) {
    for (let attempt = 0; ; attempt++) {
      const payload = { activity_id: activityId };
      if (authMode === 'none') payload.user_id = user;
      const r = await call('POST', '/api/v1/token', payload);
      if (r.ok) return r.body.token;
      // Our estimate of the server's clock can run a few milliseconds ahead of it.
      if (r.body.error === 'not_started' && attempt < 5) {
        await sleep(200);
        continue;
      }
      const refusal = new Error('token refused');
      refusal.answer = r;
      throw refusal;
    }
  }

  async function buy(productId) {
    // Every click lands here; only one at a time gets past this line.
    if (inFlight || checking || done || !open || refused.has(productId)) return;
    inFlight = true;
    updateButtons();
    const user = userId();
    if (!user) {
      inFlight = false;
      updateButtons();
      if (authMode === 'none') {
        say('Enter your user id first.', 'warn');
        $('user').focus();
      } else {
        say('Sign in first: this page has no valid login.', 'bad');
      }
      return;
    }
    if (authMode === 'none') {
      try {
        localStorage.setItem('seckill.user', user);
      } catch (e) { /* not remembered, that is all */ }
    }
    say('Buying…');
    let answer = null;
    try {
      const token = await getToken(user);
      answer = await call(
        'POST',
        '/api/v1/buy',
        { product_id: productId, user_id: user, quantity: 1, token },
        BUY_TIMEOUT_MS,
      );
    } catch (e) {
      if (e && e.answer) {
        answer = e.answer;
      } else {
        // No answer: the purchase may or may not have been made.
        inFlight = false;
        noVerdict(user);
        return;
      }
    }
    inFlight = false;
    show(answer, productId, user);
    updateButtons();
  }

  function cool(ms) {
    coolUntil = performance.now() + ms;
    setTimeout(updateButtons, ms + 10);
  }

  function show(answer, productId, user) {
    if (answer.ok) {
      done = true;
      say('You got it! Order ' + answer.body.order_no + ' is reserved for you.', 'good');
      setRemaining(productId, answer.body.remaining);
      pollResult(user, false);
      return;
    }
    const code = answer.body.error || 'error';
    const message = answer.body.message || '';
    switch (code) {
      case 'sold_out':
        refused.add(productId);
        setRemaining(productId, 0);
        say('Sold out: every unit has been taken.', 'bad');
        break;
      case 'limit_exceeded':
        refused.add(productId);
        say('You have reached the limit for this product: no more units for you.', 'bad');
        break;
      case 'not_started':
        say('The sale has not started yet.', 'warn');
        syncClock(3);
        cool(500);
        break;
      case 'paused':
        say('The sale is paused; try again shortly.', 'warn');
        cool(2000);
        break;
      case 'ended':
        done = true;
        say('This sale has ended.', 'bad');
        break;
      case 'too_many_requests':
        say('Too many requests: wait a moment, then try again.', 'warn');
        cool(1000);
        break;
      case 'busy':
        say('The server is busy (' + message + '); try again in a moment.', 'warn');
        cool(2000);
        break;
      case 'degraded':
        say(message || 'The sale is temporarily unavailable; try again later.', 'warn');
        cool(2000);
        break;
      case 'unconfirmed':
        done = true;
        say('Order ' + answer.body.order_no + ' is reserved but not yet confirmed; checking…', 'warn');
        pollResult(user, false);
        break;
      case 'unknown_outcome':
        noVerdict(user);
        break;
      case 'invalid_token':
        tokens.delete(user);
        say('Your purchase token was refused; try again.', 'warn');
        break;
      case 'revoked':
      case 'blacklisted':
        done = true;
        say('This account may not buy in this sale.', 'bad');
        break;
      case 'unauthenticated':
        say('Sign in first: this page has no valid login.', 'bad');
        break;
      case 'forbidden':
        say('You may buy only for yourself.', 'bad');
        break;
      case 'not_found':
        say('This product is not on sale.', 'bad');
        break;
      default:
        say('Not bought: ' + (message || code) + '.', 'bad');
    }
  }

  function setRemaining(productId, remaining) {
    if (typeof remaining !== 'number' || activity === null) return;
    for (const p of activity.products) if (p.id === productId) p.remaining = remaining;
    renderProducts();
  }

  function noVerdict(user) {
    checking = true;
    updateButtons();
    say('No answer from the server: checking whether your purchase went through…', 'warn');
    pollResult(user, true);
  }

  // ------------------------------------------------------------------ "did I win?"

  const STATES = {
    queued: 'queued: reserved for you, being saved',
    pending: 'persisted: saved, awaiting payment',
    paid: 'paid',
    cancelled: 'cancelled',
    expired: 'expired: not paid in time',
  };

  function renderResult(result) {
    const box = $('result');
    box.replaceChildren();
    for (const o of result.orders) {
      const line = document.createElement('p');
      line.className = 'order';
      line.dataset.orderNo = o.order_no;
      line.dataset.status = o.status;
      line.textContent = 'Order ' + o.order_no + ': ' + (STATES[o.status] || o.status);
      box.append(line);
    }
  }

  let polling = false;

  // Asks for the buyer's result after 0.5 s, then 1, 2, 4 ... at most 15 s apart, until
  // nothing is queued any more. afterNoVerdict: the first answer also decides whether the
  // buyer may try again.
  async function pollResult(user, afterNoVerdict) {
    if (polling) return;
    polling = true;
    let wait = 500;
    try {
      for (let round = 0; round < 60; round++) {
        await sleep(wait);
        wait = Math.min(wait * 2, 15000);
        let r;
        try {
          const query = authMode === 'none' ? '?user_id=' + encodeURIComponent(user) : '';
          r = await call('GET', '/api/v1/activities/' + activityId + '/result' + query);
        } catch (e) {
          continue;
        }
        if (!r.ok) continue;
        renderResult(r.body);
        if (afterNoVerdict) {
          afterNoVerdict = false;
          checking = false;
          if (r.body.reserved) {
            done = true;
            const o = r.body.orders.find((x) => x.status === 'queued' || x.status === 'pending' || x.status === 'paid');
            say('You got it! Order ' + o.order_no + '.', 'good');
          } else {
            say('Your purchase did not go through; you may try again.', 'warn');
          }
          updateButtons();
        }
        if (!r.body.orders.some((o) => o.status === 'queued')) return;
      }
    } finally {
      polling = false;
    }
  }

  // ------------------------------------------------------------------ start

  async function whoAmI() {
    if (authMode === 'jwt' && jwt === null) {
      say('Sign in first: open this page with #jwt=<your login token>.', 'warn');
      return;
    }
    try {
      const r = await call('GET', '/api/v1/activities/' + activityId + '/result');
      if (r.ok) {
        me = r.body.user_id;
        const who = $('identity');
        who.textContent = 'Signed in as ' + me;
        who.hidden = false;
        renderResult(r.body);
      } else {
        say('Sign in first: your login was not accepted.', 'warn');
      }
    } catch (e) {
      say('The server does not answer; reload the page in a moment.', 'warn');
    }
  }

  async function main() {
    if (authMode === 'jwt') readJwt();
    if (authMode === 'none') {
      $('who').hidden = false;
      try {
        $('user').value = localStorage.getItem('seckill.user') || '';
      } catch (e) { /* nothing remembered */ }
    }
    const [synced] = await Promise.all([syncClock(CLOCK_SAMPLES), refresh()]);
    if (!synced || activity === null) {
      say('This sale cannot be shown right now; reload the page in a moment.', 'bad');
      return;
    }
    if (authMode !== 'none') await whoAmI();
    tick();
    setInterval(refresh, REFRESH_MS);
    setInterval(() => {
      if (activity !== null && serverNow() < activity.start_ms - 5000) syncClock(3);
    }, RESYNC_MS);
  }

  main();
})();
