// The server's codes and reasons in words people read; the code itself stays beside them.

export const REJECT_WORDS = {
  INSUFFICIENT_FUNDS: "not enough available cash",
  INSUFFICIENT_UNITS: "not enough units to sell",
  OFF_TICK: "the price is between two ticks",
  BAD_PRICE: "the price is not a valid positive decimal",
  BAD_QTY: "the quantity must be a whole number from 1",
  BAD_AMOUNT: "the amount is not a valid cash amount",
  UNKNOWN_SYMBOL: "no such instrument",
  UNKNOWN_ORDER: "no such open order (it may have filled or been cancelled)",
  UNKNOWN_OFFERING: "no such offering",
  NOT_TRADING: "the instrument is not trading now",
  POST_ONLY_WOULD_TAKE: "a post-only order would have traded at once",
  DUPLICATE_CLIENT_ORDER_ID: "that client order id was used for another order",
  TOO_MANY_ORDERS: "too many open orders",
  OFFERING_CLOSED: "the offering is closed",
  RATE_LIMITED: "too many requests; slow down",
  BUSY: "the exchange is busy; try again",
  UNAVAILABLE: "no answer from the exchange in time; the outcome is unknown",
  NOT_AUTHENTICATED: "log in first",
  AUTH_FAILED: "the exchange does not know this API key",
  BAD_REQUEST: "the request was not valid",
  PRICE_OUT_OF_BAND: "the price is too far from the reference price",
  NOT_IN_PHASE: "not allowed in the instrument's current phase",
  BAD_TRIGGER: "the trigger price is not valid",
  BAD_EXPIRY: "the expiry is not valid",
};

export const DONE_WORDS = {
  filled: "filled",
  cancelled: "cancelled",
  expired: "expired (the rest was not kept)",
  self_trade: "cancelled to prevent a trade with yourself",
  replaced_out: "ended: replaced to no more than had filled",
};

export function rejectText(answer) {
  const words = REJECT_WORDS[answer.code] ?? answer.message ?? "refused";
  return `Rejected: ${words} (${answer.code})`;
}

export function sideText(side) {
  return side === "buy" ? "▲ Buy" : "▼ Sell";
}

// A price in the instrument's tick, from a number of ticks' worth (for computed values).
export function formatPrice(value, tickSize) {
  const decimals = (tickSize.split(".")[1] ?? "").length;
  return Number(value).toFixed(decimals);
}

export function timeText(ns) {
  const d = new Date(Number(BigInt(ns) / 1000000n));
  return d.toLocaleTimeString([], { hour12: false });
}
