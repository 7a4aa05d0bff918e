// Candles with volume, and the depth chart, drawn on canvases (no library).

const INK = "#1f2328";
const GRID = "#d0d7de";
const UP = "#1a7f37";
const DOWN = "#cf222e";
const VALUE = "#0969da";

function sized(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = Number(canvas.getAttribute("height"));
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

function label(ctx, text, x, y, align = "left") {
  ctx.fillStyle = INK;
  ctx.textAlign = align;
  ctx.fillText(text, x, y);
}

// candles: [{ts, open, high, low, close, volume}] (numbers; ts in ms), oldest first.
// value: [[ts ms, price]] (the demo's hidden value) or null.
export function drawCandles(canvas, candles, value, intervalMs, decimals) {
  const { ctx, width, height } = sized(canvas);
  const left = 8, right = 62, top = 8, volumeHeight = 50, bottom = 18;
  const priceHeight = height - top - bottom - volumeHeight - 6;
  if (!candles.length) {
    label(ctx, "no trades yet", width / 2, height / 2, "center");
    return;
  }
  // Slots of one interval: as many as there are candles and a few more (at least 20, at
  // most what fits). A young market's few candles start at the left; an older one's newest
  // end at the right.
  const fit = Math.floor((width - left - right) / 8);
  const slots = Math.max(20, Math.min(candles.length + 4, fit));
  const newest = Math.max(candles[candles.length - 1].ts, Math.floor(Date.now() / intervalMs) * intervalMs);
  const first = candles[0].ts - intervalMs;
  const young = (newest - first) / intervalMs + 1 < slots;
  const start = young ? first : newest + intervalMs - slots * intervalMs;
  const end = start + slots * intervalMs;
  const shown = candles.filter((c) => c.ts >= start);
  const points = (value || []).filter(([ts]) => ts >= start && ts <= end);
  if (!shown.length) {
    label(ctx, "no trades in this window", width / 2, height / 2, "center");
    return;
  }
  let lo = Math.min(...shown.map((c) => c.low), ...points.map((p) => p[1]));
  let hi = Math.max(...shown.map((c) => c.high), ...points.map((p) => p[1]));
  const least = 4 / 10 ** decimals; // a flat market still gets an axis of four ticks
  if (hi - lo < least) { const mid = (hi + lo) / 2; hi = mid + least / 2; lo = mid - least / 2; }
  const maxVolume = Math.max(...shown.map((c) => c.volume), 1);
  const plotWidth = width - left - right;
  const x = (ts) => left + ((ts - start) / (end - start)) * plotWidth;
  const y = (price) => top + (1 - (price - lo) / (hi - lo)) * priceHeight;
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const price = lo + ((hi - lo) * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y(price)); ctx.lineTo(width - right, y(price)); ctx.stroke();
    label(ctx, price.toFixed(decimals), width - 4, y(price) + 4, "right");
  }
  const slot = (plotWidth * intervalMs) / (end - start);
  const body = Math.max(1, Math.min(12, slot * 0.7));
  const volumeTop = top + priceHeight + 6;
  for (const c of shown) {
    const mid = x(c.ts + intervalMs / 2);
    const rising = c.close >= c.open;
    ctx.strokeStyle = ctx.fillStyle = rising ? UP : DOWN;
    ctx.beginPath(); ctx.moveTo(mid, y(c.high)); ctx.lineTo(mid, y(c.low)); ctx.stroke();
    const yTop = y(Math.max(c.open, c.close));
    const h = Math.max(1, Math.abs(y(c.open) - y(c.close)));
    if (rising) ctx.strokeRect(mid - body / 2, yTop, body, h); // hollow: up (not by colour alone)
    else ctx.fillRect(mid - body / 2, yTop, body, h); // filled: down
    ctx.fillStyle = "#8c959f";
    const vh = (c.volume / maxVolume) * volumeHeight;
    ctx.fillRect(mid - body / 2, volumeTop + volumeHeight - vh, body, vh);
  }
  if (points.length > 1) {
    ctx.strokeStyle = VALUE;
    ctx.setLineDash([5, 3]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([ts, price], i) => (i ? ctx.lineTo(x(ts), y(price)) : ctx.moveTo(x(ts), y(price))));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  label(ctx, new Date(start).toLocaleTimeString([], { hour12: false }), left, height - 4);
  label(ctx, new Date(end).toLocaleTimeString([], { hour12: false }), width - right, height - 4, "right");
  label(ctx, `volume (max ${maxVolume})`, left + 2, volumeTop + 10);
}

// bids/asks: [[price number, qty]] best first.
export function drawDepth(canvas, bids, asks, decimals) {
  const { ctx, width, height } = sized(canvas);
  const left = 8, right = 8, top = 8, bottom = 18;
  if (!bids.length && !asks.length) {
    label(ctx, "empty book", width / 2, height / 2, "center");
    return;
  }
  const cumulate = (levels) => { let sum = 0; return levels.map(([p, q]) => [p, (sum += q)]); };
  const cb = cumulate(bids), ca = cumulate(asks);
  const prices = [...bids, ...asks].map(([p]) => p);
  const lo = Math.min(...prices), hi = Math.max(...prices);
  const span = hi - lo || 1;
  const maxCum = Math.max(cb.length ? cb[cb.length - 1][1] : 0, ca.length ? ca[ca.length - 1][1] : 0, 1);
  const x = (p) => left + ((p - lo) / span) * (width - left - right);
  const y = (q) => top + (1 - q / maxCum) * (height - top - bottom);
  const area = (points, colour, pattern) => {
    if (!points.length) return;
    ctx.beginPath();
    ctx.moveTo(x(points[0][0]), y(0));
    let previous = 0;
    for (const [p, q] of points) { ctx.lineTo(x(p), y(previous)); ctx.lineTo(x(p), y(q)); previous = q; }
    ctx.lineTo(x(points[points.length - 1][0]), y(0));
    ctx.closePath();
    ctx.globalAlpha = 0.25; ctx.fillStyle = colour; ctx.fill();
    ctx.globalAlpha = 1; ctx.strokeStyle = colour; ctx.setLineDash(pattern); ctx.lineWidth = 1.5; ctx.stroke();
    ctx.setLineDash([]);
  };
  area(cb, UP, []); // bids: solid line
  area(ca, DOWN, [4, 3]); // asks: dashed (not by colour alone)
  label(ctx, lo.toFixed(decimals), left, height - 4);
  label(ctx, hi.toFixed(decimals), width - right, height - 4, "right");
  label(ctx, "◀ bids (solid) · asks (dashed) ▶", width / 2, height - 4, "center");
}
