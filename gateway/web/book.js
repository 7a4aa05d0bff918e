// A level-2 book kept from market data and checked message by message, with the same
// rules as the Python client library (gateway/client.py, LocalBook): the book seq must go
// up by one with each book_update and each call auction's auction message, the trades seq
// by one with each trade (from the
// snapshot's trade_seq), and every snapshot and update's checksum must match the book
// after it. Any miss means the book can no longer be trusted: resubscribe. The page also
// compares the seqs a ticker or heartbeat carries (`behind`): a lost last update, which no
// later update would reveal, is caught too.

const CHECKSUM_DEPTH = 10; // levels a side the contract's checksum covers

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

// zlib's CRC-32 of a string's UTF-8 bytes (unsigned, as the server sends it).
export function crc32(text) {
  const bytes = new TextEncoder().encode(text);
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// An exact key that orders wire prices ("10.05") as numbers.
export function priceKey(price) {
  const [whole, fraction = ""] = price.split(".");
  return BigInt(whole) * 10n ** 18n + BigInt((fraction + "0".repeat(18)).slice(0, 18));
}

function sorted(levels, descending) {
  const out = [...levels.entries()];
  out.sort((a, b) => {
    const ka = priceKey(a[0]), kb = priceKey(b[0]);
    const order = ka < kb ? -1 : ka > kb ? 1 : 0;
    return descending ? -order : order;
  });
  return out;
}

export class LocalBook {
  constructor(symbol) {
    this.symbol = symbol;
    this.bids = new Map(); // wire price -> qty
    this.asks = new Map();
    this.seq = null;
    this.tradeSeq = null;
    this.gaps = 0;
    this.badChecksums = 0;
  }

  // Apply one market-data message; false when the book can no longer be trusted.
  apply(message) {
    if (message.symbol !== this.symbol) return true;
    switch (message.type) {
      case "book_snapshot":
        this.bids = new Map(message.bids.map(([p, q]) => [p, q]));
        this.asks = new Map(message.asks.map(([p, q]) => [p, q]));
        this.seq = message.seq;
        this.tradeSeq = message.trade_seq ?? null;
        return this.checked(message.checksum);
      case "book_update":
        if (this.seq === null) return true; // waiting for the snapshot a resubscribe brings
        if (message.seq !== this.seq + 1) return this.gap();
        this.seq = message.seq;
        for (const [side, price, qty] of message.changes) {
          const levels = side === "buy" ? this.bids : this.asks;
          if (qty) levels.set(price, qty);
          else levels.delete(price);
        }
        return this.checked(message.checksum);
      case "auction": // a call auction's indicative price takes a book seq, changes no level
        if (this.seq === null) return true;
        if (message.seq !== this.seq + 1) return this.gap();
        this.seq = message.seq;
        return true;
      case "trade":
        if (this.tradeSeq !== null && message.seq !== this.tradeSeq + 1) return this.gap();
        this.tradeSeq = message.seq;
        return true;
      default:
        return true;
    }
  }

  // Whether a ticker's or heartbeat's seqs (sent after what they count, on the same
  // socket) are past what this book has seen: then a message was lost.
  behind(bookSeq, tradeSeq) {
    if (this.seq === null) return false; // a snapshot is on its way
    const lost = bookSeq > this.seq || (tradeSeq !== null && this.tradeSeq !== null && tradeSeq > this.tradeSeq);
    if (lost) this.gap();
    return lost;
  }

  gap() {
    this.gaps += 1;
    this.seq = null;
    this.tradeSeq = null;
    return false;
  }

  checksum() {
    const text = (levels) => levels.slice(0, CHECKSUM_DEPTH).map(([p, q]) => `${p}:${q}`).join(";");
    return crc32(`A${text(this.askLevels())}|B${text(this.bidLevels())}`);
  }

  checked(checksum) {
    if (this.checksum() !== checksum) {
      this.badChecksums += 1;
      this.seq = null;
      this.tradeSeq = null;
      return false;
    }
    return true;
  }

  bidLevels() { return sorted(this.bids, true); } // best (highest) first
  askLevels() { return sorted(this.asks, false); } // best (lowest) first
}
