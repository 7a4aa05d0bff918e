"""Client order ids: what answered each one, so a resent place is answered, not repeated.

An account keeps its newest MAX_CLIENT_ORDER_IDS_PER_ACCOUNT ids (those of open orders always).
An accepted place's record is its order itself, open or ended (the order keeps its place and
its fields stop changing once it ends), so ending an order writes nothing here; a refused
place's record is the place and its rejection. docs/ENGINE.md, "Orders".
"""

import msgspec

from exchange.domain.accounts import Account, ClientOrderRecord
from exchange.domain.book import Order
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import PlaceOrder
from exchange.domain.events import Event, OrderAccepted
from exchange.domain.limits import MAX_CLIENT_ORDER_IDS_PER_ACCOUNT
from exchange.domain.replies import order_rejected


def remember(account: Account, cid: str, record: ClientOrderRecord) -> None:
    """Keep what answered `cid`, forgetting the oldest ended one past the bound."""
    account.client_orders[cid] = record
    ids = account.client_order_ids
    ids.append(cid)
    if len(ids) > MAX_CLIENT_ORDER_IDS_PER_ACCOUNT:
        records = account.client_orders
        for _ in range(len(ids)):  # each open order's id moves to the back at most once
            oldest = ids.popleft()
            if open_order(records[oldest]) is not None:
                ids.append(oldest)
            else:
                del records[oldest]
                return


def open_order(record: "ClientOrderRecord | None") -> Order | None:
    """The open order (one that may still trade or be cancelled) a record names, if any."""
    if isinstance(record, Order) and record.status == "open":
        return record
    return None


def answer_resend(cmd: PlaceOrder, record: ClientOrderRecord) -> Event:
    """A place whose client order id was used before: repeat the answer, or refuse it."""
    if isinstance(record, Order):
        first = record.place
        assert first is not None, "an order with a client order id keeps its place"
    else:
        first = record[0]
    if msgspec.structs.replace(cmd, ts=first.ts) != first:
        return order_rejected(
            cmd, Code.DUPLICATE_CLIENT_ORDER_ID, "client_order_id was used for another order"
        )
    if not isinstance(record, Order):
        return record[1]
    return OrderAccepted(
        order_id=record.order_id,
        account=cmd.account,
        client_order_id=cmd.client_order_id,
        symbol=first.symbol,
        side=first.side,
        type=first.type,
        tif=first.tif,
        price=record.price,
        qty=record.qty,
        remaining=record.remaining,
        status=record.status,
        post_only=first.post_only,
        ts=first.ts,  # an order's time is that of the place that created it
        resent=True,
        expire_at=first.expire_at,
        trigger_price=first.trigger_price,
        display_qty=first.display_qty,
        budget=first.max_notional if first.type == "stop" else 0,
    )
