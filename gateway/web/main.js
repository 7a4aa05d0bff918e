// The trading page: market data over the WebSocket protocol (checked like the client
// library), reads over REST, order entry over the same socket once logged in.
import { LocalBook } from "./book.js";
import { drawCandles, drawDepth } from "./charts.js";
import { Connection } from "./feed.js";
import { DONE_WORDS, formatPrice, rejectText, sideText, timeText } from "./words.js";

const LADDER_DEPTH = 20; // levels a side the ladder shows (the depth chart too)
const TAPE_KEPT = 60; // trades the tape shows
const CANDLES_ASKED = 300;
const INTERVALS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "1d": 86400e3 };
const REFRESH_MS = 15000; // instruments, offerings, 24 h figures
const VALUE_POLL_MS = 2000; // the demo's hidden value
const KEY_STORE = "exchange.apiKey"; // sessionStorage only: gone when the tab closes

const $ = (id) => document.getElementById(id);
const state = {
  instruments: new Map(),
  symbol: null,
  tickSize: "0.01",
  book: null,
  trades: [],
  candles: [],
  interval: "1m",
  apiKey: sessionStorage.getItem(KEY_STORE),
  account: null,
  value: null, // the demo feed's answer while it runs
  resyncs: 0,
  subscriptions: [],
  drawPending: false,
};
const decimals = () => (state.tickSize.split(".")[1] ?? "").length;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "type" || key === "value" || key === "title")
      node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function say(text, kind = "info") {
  const line = $("status-line");
  line.textContent = text;
  line.dataset.kind = kind;
}

async function rest(path, withKey = false) {
  const headers = withKey && state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  const body = await response.json();
  if (!response.ok) {
    const problem = new Error(body.message || response.statusText);
    problem.code = body.code;
    problem.status = response.status;
    throw problem;
  }
  return body;
}

// --- connection -----------------------------------------------------------------------

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
const connection = new Connection(wsUrl, {
  onState: (s, detail) => {
    const line = $("connection");
    line.dataset.state = s;
    const words = { connecting: "connecting…", live: "● live", stalled: "◌ stalled — reconnecting", reconnecting: "○ reconnecting" };
    line.textContent = `${words[s] ?? s}${detail ? ` (${detail})` : ""}${state.resyncs ? ` · resynced ${state.resyncs}×` : ""}`;
  },
  onMessage,
  onOpen: async () => {
    if (state.apiKey) {
      const answer = await connection.request("auth", { api_key: state.apiKey });
      if (answer.type !== "authenticated") forgetKey(answer);
      else if (!state.account) { // a reload of a logged-in tab
        state.account = answer.account;
        say(`Logged in as account ${answer.account}.`);
      }
    }
    state.subscriptions = [];
    await subscribe(state.symbol);
    loadHistory();
    if (state.apiKey) loadPrivate();
  },
});

async function subscribe(symbol) {
  state.book = new LocalBook(symbol);
  await connection.request("subscribe", { channels: ["book", "trades", "ticker"], symbols: [symbol] });
  state.subscriptions = [symbol];
}

async function resync() {
  state.resyncs += 1;
  $("connection").dataset.resyncs = String(state.resyncs);
  const symbol = state.symbol;
  try {
    await connection.request("unsubscribe", { channels: ["book", "trades", "ticker"], symbols: [symbol] });
    await subscribe(symbol);
  } catch (problem) {
    /* the socket went: its reconnect subscribes again */
  }
}

function onMessage(m) {
  switch (m.type) {
    case "book_snapshot":
    case "book_update":
    case "trade":
      if (m.symbol !== state.symbol || !state.book) return;
      if (!state.book.apply(m)) { resync(); return; }
      if (m.type === "trade") addTrade(m, true);
      scheduleDraw();
      return;
    case "ticker": // carries the book seq after its batch: ahead of ours, an update was lost
      if (m.symbol !== state.symbol) return;
      if (state.book && state.book.behind(m.seq, null)) { resync(); return; }
      showTicker(m);
      return;
    case "heartbeat": { // both seqs, once a second: catches a loss nothing followed yet
      const seqs = m.seqs?.[state.symbol];
      if (seqs && state.book && state.book.behind(seqs.book, seqs.trades)) resync();
      return;
    }
    case "status":
      if (state.instruments.has(m.symbol)) state.instruments.get(m.symbol).status = m.status;
      showStatus();
      return;
    case "auction": // it takes a book seq: the book checks it like an update's
      if (m.symbol !== state.symbol || !state.book) return;
      if (!state.book.apply(m)) { resync(); return; }
      showStatus(m);
      return;
    case "accepted": case "fill": case "done": case "replaced": case "cancelled_all": case "offering_subscribed":
      schedulePrivate();
      return;
    case "error":
      say(`Error: ${m.message} (${m.code})`, "error");
      return;
    default:
  }
}

// --- market data ----------------------------------------------------------------------

function scheduleDraw() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => { state.drawPending = false; drawMarket(); });
}

function ladderRows(levels, side, maxQty) {
  return levels.map(([price, qty]) => {
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${Math.max(1, (qty / maxQty) * 100)}%`;
    const row = el("div", { class: `level ${side}`, "data-testid": "level", "data-price": price, "data-qty": String(qty) },
      bar, el("span", { class: "side" }, side === "ask" ? "Ask" : "Bid"),
      el("span", { class: "num price" }, price), el("span", { class: "num qty" }, qty.toLocaleString()));
    row.title = "click: use this price in the order ticket";
    row.addEventListener("click", () => { $("price").value = price; });
    return row;
  });
}

function drawMarket() {
  const book = state.book;
  if (!book) return;
  const bids = book.bidLevels().slice(0, LADDER_DEPTH);
  const asks = book.askLevels().slice(0, LADDER_DEPTH);
  const maxQty = Math.max(1, ...bids.map((l) => l[1]), ...asks.map((l) => l[1]));
  $("asks").replaceChildren(...ladderRows([...asks].reverse(), "ask", maxQty));
  $("bids").replaceChildren(...ladderRows(bids, "bid", maxQty));
  if (bids.length && asks.length) {
    const bid = Number(bids[0][0]), ask = Number(asks[0][0]);
    const bps = ((ask - bid) / ((ask + bid) / 2)) * 10000;
    $("spread").textContent = `spread ${formatPrice(ask - bid, state.tickSize)} (${bps.toFixed(1)} bps) · seq ${book.seq}`;
  } else {
    $("spread").textContent = `spread – · seq ${book.seq ?? "–"}`;
  }
  drawDepth($("depth"), bids.map(([p, q]) => [Number(p), q]), asks.map(([p, q]) => [Number(p), q]), decimals());
  drawChart();
}

function drawChart() {
  const points = state.value && state.value.symbol === state.symbol
    ? state.value.points.map(([ts, p]) => [ts / 1e6, Number(p)]) : null;
  drawCandles($("candles"), state.candles, points, INTERVALS[state.interval], decimals());
  $("candle-legend").textContent = points
    ? "Candles: hollow = rose, filled = fell. Dashed blue line: the simulation's hidden value (demo only)."
    : "Candles: hollow = rose, filled = fell; volume below.";
}

function addTrade(t, live) {
  if (state.trades.some((x) => x.trade_id === t.trade_id)) return;
  state.trades.unshift(t);
  state.trades.length = Math.min(state.trades.length, TAPE_KEPT);
  const row = el("li", { class: `trade ${t.aggressor}`, "data-testid": "trade", "data-trade-id": t.trade_id },
    el("span", { class: "time" }, timeText(t.ts)), el("span", { class: "side" }, sideText(t.aggressor)),
    el("span", { class: "num" }, t.price), el("span", { class: "num" }, String(t.qty)));
  const list = $("trades");
  list.prepend(row);
  while (list.children.length > TAPE_KEPT) list.lastChild.remove();
  $("t-last").textContent = state.trades[0].price;
  if (live) { addToCandles(t); scheduleTicker(); }
}

let tickerTimer = null;
function scheduleTicker() { // the 24 h figures after trades, at most once a second
  if (tickerTimer) return;
  tickerTimer = setTimeout(() => { tickerTimer = null; loadTicker(); }, 1000);
}

function addToCandles(t) {
  const span = INTERVALS[state.interval];
  const ms = Number(BigInt(t.ts) / 1000000n);
  const start = Math.floor(ms / span) * span;
  const price = Number(t.price);
  const last = state.candles[state.candles.length - 1];
  if (last && last.ts === start) {
    last.high = Math.max(last.high, price);
    last.low = Math.min(last.low, price);
    last.close = price;
    last.volume += t.qty;
  } else if (!last || start > last.ts) {
    state.candles.push({ ts: start, open: price, high: price, low: price, close: price, volume: t.qty });
  }
  const c = state.candles[state.candles.length - 1];
  const canvas = $("candles");
  canvas.dataset.count = String(state.candles.length);
  canvas.dataset.lastClose = c.close.toFixed(decimals());
  canvas.dataset.lastVolume = String(c.volume);
}

async function loadHistory() {
  const symbol = state.symbol;
  try {
    const [trades, candles] = await Promise.all([
      rest(`/v1/trades/${symbol}?limit=${TAPE_KEPT}`),
      rest(`/v1/candles/${symbol}?interval=${state.interval}&limit=${CANDLES_ASKED}`),
    ]);
    if (symbol !== state.symbol) return;
    state.candles = candles.candles.map((c) => ({
      ts: Number(BigInt(c.ts) / 1000000n), open: Number(c.open), high: Number(c.high),
      low: Number(c.low), close: Number(c.close), volume: c.volume,
    }));
    const canvas = $("candles");
    canvas.dataset.count = String(state.candles.length);
    const c = state.candles[state.candles.length - 1];
    canvas.dataset.lastClose = c ? c.close.toFixed(decimals()) : "";
    canvas.dataset.lastVolume = c ? String(c.volume) : "0";
    for (const t of [...trades.trades].reverse()) addTrade(t, false);
    scheduleDraw();
  } catch (problem) {
    say(`Could not read the market's history: ${problem.message}`, "error");
  }
  loadTicker();
}

async function loadTicker() {
  try {
    const t = await rest(`/v1/ticker/${state.symbol}`);
    showTicker(t);
    $("t-high").textContent = t["24h"]?.high ?? "–";
    $("t-low").textContent = t["24h"]?.low ?? "–";
  } catch (problem) { /* shown at the next refresh */ }
}

function showTicker(t) {
  $("t-bid").textContent = t.best_bid ?? "–";
  $("t-ask").textContent = t.best_ask ?? "–";
  $("t-last").textContent = t.last ?? "–";
  $("t-vol").textContent = t["24h"] ? t["24h"].volume.toLocaleString() : $("t-vol").textContent;
}

function showStatus(auction) {
  const i = state.instruments.get(state.symbol);
  const badge = $("instrument-status");
  badge.dataset.status = i ? i.status : "";
  badge.textContent = i ? `${i.kind} · ${i.status.replace("_", " ")}` : "";
  if (auction) badge.textContent += ` · indicative ${auction.indicative_price ?? "–"} × ${auction.indicative_qty ?? 0}`;
  const select = $("symbol");
  for (const option of select.options) {
    const inst = state.instruments.get(option.value);
    if (inst) option.textContent = `${inst.symbol} (${inst.status.replace("_", " ")})`;
  }
}

async function loadInstruments() {
  const { instruments } = await rest("/v1/instruments");
  const select = $("symbol");
  const known = new Set(state.instruments.keys());
  for (const i of instruments) {
    state.instruments.set(i.symbol, i);
    if (!known.has(i.symbol)) select.append(el("option", { value: i.symbol }, i.symbol));
  }
  showStatus();
}

async function chooseSymbol(symbol) {
  const previous = state.subscriptions;
  state.symbol = symbol;
  state.tickSize = state.instruments.get(symbol)?.tick_size ?? "0.01";
  state.trades = [];
  state.candles = [];
  $("trades").replaceChildren();
  $("symbol").value = symbol;
  showStatus();
  if (location.hash !== `#${symbol}`) history.replaceState(null, "", `#${symbol}`);
  if (connection.state === "live") {
    try {
      if (previous.length) await connection.request("unsubscribe", { channels: ["book", "trades", "ticker"], symbols: previous });
      await subscribe(symbol);
    } catch (problem) { /* the reconnect subscribes */ }
    loadHistory();
  }
  showValue();
}

// --- the demo's hidden value -----------------------------------------------------------

async function pollValue() {
  try {
    const feed = await rest("/v1/demo/fundamental");
    if (!feed.running) return; // not a demo with a simulation: nothing to show, ever
    state.value = feed;
    showValue();
  } catch (problem) { /* the server may be restarting */ }
  setTimeout(pollValue, VALUE_POLL_MS);
}

function showValue() {
  const shown = state.value && state.value.symbol === state.symbol;
  $("fundamental-box").hidden = !shown;
  if (shown) $("t-fundamental").textContent = state.value.value ?? "–";
  drawChart();
}

// --- account --------------------------------------------------------------------------

function forgetKey(answer) {
  sessionStorage.removeItem(KEY_STORE);
  state.apiKey = null;
  state.account = null;
  showAccount();
  if (answer) say(`Login failed: ${rejectText(answer).replace(/^Rejected: /, "")}`, "error");
}

async function login(event) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  input.value = "";
  if (!key) { say("Enter an API key to log in.", "error"); return; }
  const previous = state.apiKey;
  state.apiKey = key;
  try {
    const account = await rest("/v1/account", true);
    sessionStorage.setItem(KEY_STORE, key);
    state.account = account.account;
    const answer = await connection.request("auth", { api_key: key });
    if (answer.type !== "authenticated") { forgetKey(answer); return; }
    say(`Logged in as account ${account.account}.`);
    showAccount();
    loadPrivate();
  } catch (problem) {
    state.apiKey = previous;
    const code = problem.code ?? "AUTH_FAILED";
    const words = code === "AUTH_FAILED" ? "the exchange does not know this API key" : problem.message;
    say(`Login failed: ${words} (${code}).`, "error");
  }
}

function showAccount() {
  const logged = Boolean(state.apiKey);
  $("who").textContent = logged ? `account ${state.account ?? "…"}` : "not logged in";
  $("logout-button").hidden = !logged;
  $("login-button").hidden = logged;
  $("api-key").hidden = logged;
  if (!logged) {
    $("balances").textContent = "–";
    $("open-orders").replaceChildren();
    $("fills").replaceChildren();
  }
}

let privateTimer = null;
function schedulePrivate() {
  if (privateTimer || !state.apiKey) return;
  privateTimer = setTimeout(() => { privateTimer = null; loadPrivate(); }, 150);
}

async function loadPrivate() {
  if (!state.apiKey) return;
  try {
    const [account, orders, fills] = await Promise.all([
      rest("/v1/account", true), rest("/v1/orders?status=open", true), rest("/v1/fills?limit=30", true),
    ]);
    state.account = account.account;
    showAccount();
    showBalances(account);
    showOrders(orders.orders);
    showFills(fills.fills);
  } catch (problem) {
    if (problem.status === 401) forgetKey({ code: "AUTH_FAILED" });
  }
}

function showBalances(a) {
  const rows = [
    ["Cash", a.cash], ["Available", a.available_cash], ["Held for orders", a.holds.cash],
  ];
  const symbols = new Set([...Object.keys(a.positions), ...Object.keys(a.holds.units)]);
  const table = el("table", { class: "balances-table" });
  for (const [name, value] of rows) table.append(el("tr", {}, el("th", {}, name), el("td", { class: "num" }, value)));
  for (const s of [...symbols].sort()) {
    const held = a.holds.units[s] ?? 0;
    table.append(el("tr", { "data-symbol": s }, el("th", {}, `${s} units`),
      el("td", { class: "num" }, `${(a.positions[s] ?? 0).toLocaleString()}${held ? ` (${held.toLocaleString()} held)` : ""}`)));
  }
  $("balances").replaceChildren(table);
}

function showOrders(orders) {
  $("open-orders").replaceChildren(...orders.map((o) => {
    const price = el("input", { class: "num", value: o.price ?? "", size: 8, "aria-label": `new price for order ${o.order_id}` });
    const qty = el("input", { class: "num", value: String(o.qty), size: 6, "aria-label": `new quantity for order ${o.order_id}` });
    const replace = el("button", { type: "button", "data-testid": "replace" }, "Replace");
    replace.addEventListener("click", () => replaceOrder(o, price.value.trim(), qty.value.trim()));
    const cancel = el("button", { type: "button", "data-testid": "cancel" }, "Cancel");
    cancel.addEventListener("click", () => cancelOrder(o.order_id));
    return el("tr", { "data-testid": "order", "data-order-id": o.order_id, class: o.side },
      el("td", {}, `${o.symbol} #${o.order_id}`), el("td", { class: "side" }, sideText(o.side)),
      el("td", { class: "num" }, o.price ?? "market"), el("td", { class: "num" }, `${o.remaining} of ${o.qty}`),
      el("td", { class: "change" }, price, qty, replace, cancel));
  }));
}

function showFills(fills) {
  $("fills").replaceChildren(...fills.map((f) => el("tr", { "data-testid": "fill", class: f.side },
    el("td", {}, timeText(f.ts)), el("td", { class: "side" }, `${sideText(f.side)} ${f.symbol}`),
    el("td", { class: "num" }, f.price), el("td", { class: "num" }, String(f.qty)),
    el("td", { class: "num" }, f.fee !== undefined ? `${f.fee} ${f.fee_asset ?? ""}` : "–"),
    el("td", {}, f.liquidity))));
}

// --- order entry ----------------------------------------------------------------------

let ordersSent = 0;
async function placeOrder(event) {
  event.preventDefault();
  if (!state.apiKey) { say("Log in with an API key first (NOT_AUTHENTICATED).", "error"); return; }
  const type = $("type").value;
  const qtyText = $("qty").value.trim();
  if (!/^[0-9]+$/.test(qtyText) || Number(qtyText) < 1) { say("Rejected: the quantity must be a whole number from 1 (BAD_QTY)", "error"); return; }
  const order = {
    client_order_id: `web-${Date.now()}-${++ordersSent}`, symbol: state.symbol, side: $("side").value,
    type, qty: Number(qtyText), tif: $("tif").value, post_only: $("post-only").checked,
  };
  if (type === "limit") order.price = $("price").value.trim();
  try {
    const a = await connection.request("place", order);
    if (a.type === "accepted") {
      const at = a.price ? ` @ ${a.price}` : " at market";
      say(`Accepted: ${sideText(a.side)} ${a.qty} ${a.symbol}${at} — order ${a.order_id}, ${a.status}` +
        (a.filled ? `, filled ${a.filled}${a.avg_price ? ` at ${a.avg_price} on average` : ""}` : ""), "ok");
    } else if (a.type === "rejected") say(rejectText(a), "error");
    else say(`Error: ${a.message ?? a.type} (${a.code ?? ""})`, "error");
  } catch (problem) {
    say(`Not sent: ${problem.message}. The page reconnects by itself; check open orders before sending again.`, "error");
  }
  loadPrivate();
}

async function cancelOrder(orderId) {
  try {
    const a = await connection.request("cancel", { order_id: orderId });
    if (a.type === "done") say(`Order ${orderId} ${DONE_WORDS[a.reason] ?? a.reason}.`, "ok");
    else say(rejectText(a), "error");
  } catch (problem) { say(`Not sent: ${problem.message}`, "error"); }
  loadPrivate();
}

async function replaceOrder(o, price, qty) {
  const fields = { order_id: o.order_id };
  if (qty && qty !== String(o.qty)) {
    if (!/^[0-9]+$/.test(qty)) { say("Rejected: the quantity must be a whole number from 1 (BAD_QTY)", "error"); return; }
    fields.qty = Number(qty);
  }
  if (price && price !== o.price) fields.price = price;
  if (Object.keys(fields).length === 1) { say("Change the price or the quantity first, then Replace.", "error"); return; }
  try {
    const a = await connection.request("replace", fields);
    if (a.type === "replaced") say(`Replaced order ${a.order_id}: ${a.qty} @ ${a.price} (${a.kept_priority ? "kept" : "lost"} its time priority).`, "ok");
    else say(rejectText(a), "error");
  } catch (problem) { say(`Not sent: ${problem.message}`, "error"); }
  loadPrivate();
}

// --- offerings ------------------------------------------------------------------------

async function loadOfferings() {
  try {
    const { offerings } = await rest("/v1/offerings");
    $("offerings").replaceChildren(...offerings.map((o) => {
      const item = el("li", { "data-testid": "offering", "data-offering-id": o.offering_id, "data-status": o.status },
        el("strong", {}, `${o.symbol} #${o.offering_id}`),
        ` ${o.qty.toLocaleString()} new units at ${o.price} · ${o.status} · ${o.subscribed.toLocaleString()} subscribed`);
      if (o.status === "open") {
        const qty = el("input", { class: "num", size: 6, value: "10", "aria-label": `units to subscribe in offering ${o.offering_id}` });
        const button = el("button", { type: "button" }, "Subscribe");
        button.addEventListener("click", () => subscribeOffering(o.offering_id, qty.value.trim()));
        item.append(" ", qty, button);
      } else {
        const ratio = o.subscribed > o.qty ? o.qty / o.subscribed : 1;
        item.append(el("div", { class: "allocation" }, o.subscribed > o.qty
          ? `Allocated pro rata: each subscriber received about ${(ratio * 100).toFixed(1)}% of the units asked for.`
          : "Every subscription was allocated in full."));
      }
      return item;
    }));
  } catch (problem) { /* shown at the next refresh */ }
}

async function subscribeOffering(offeringId, qty) {
  if (!state.apiKey) { say("Log in with an API key first (NOT_AUTHENTICATED).", "error"); return; }
  if (!/^[0-9]+$/.test(qty)) { say("Rejected: the quantity must be a whole number from 1 (BAD_QTY)", "error"); return; }
  try {
    const a = await connection.request("subscribe_offering", { offering_id: offeringId, qty: Number(qty) });
    if (a.type === "offering_subscribed") say(`Subscribed ${a.qty} units in offering ${a.offering_id}; the cash is held until it closes.`, "ok");
    else say(rejectText(a), "error");
  } catch (problem) { say(`Not sent: ${problem.message}`, "error"); }
  loadOfferings();
  loadPrivate();
}

// --- start ----------------------------------------------------------------------------

function intervalButtons() {
  $("intervals").replaceChildren(...Object.keys(INTERVALS).map((name) => {
    const b = el("button", { type: "button", "data-interval": name, "aria-pressed": String(name === state.interval) }, name);
    b.addEventListener("click", () => {
      state.interval = name;
      for (const other of $("intervals").children) other.setAttribute("aria-pressed", String(other === b));
      loadHistory();
    });
    return b;
  }));
}

async function start() {
  intervalButtons();
  $("login").addEventListener("submit", login);
  $("logout-button").addEventListener("click", () => { forgetKey(); location.reload(); });
  $("ticket").addEventListener("submit", placeOrder);
  $("type").addEventListener("change", () => { $("price").disabled = $("type").value === "market"; });
  $("symbol").addEventListener("change", () => chooseSymbol($("symbol").value));
  window.addEventListener("resize", scheduleDraw);
  showAccount();
  try {
    await loadInstruments();
  } catch (problem) {
    say(`The exchange did not answer: ${problem.message}`, "error");
  }
  const wanted = location.hash.slice(1);
  const first = state.instruments.has(wanted) ? wanted
    : state.instruments.has("ACME") ? "ACME" : [...state.instruments.keys()][0];
  state.symbol = first ?? "ACME";
  await chooseSymbol(state.symbol);
  connection.start();
  loadOfferings();
  pollValue();
  setInterval(() => { loadInstruments().catch(() => {}); loadOfferings(); loadTicker(); }, REFRESH_MS);
}

start();
