"""Client order ids: what answered each one, so a resent place is answered, not repeated.

An account keeps its newest MAX_CLIENT_ORDER_IDS_PER_ACCOUNT ids (those of open orders always);
an ended order is kept as plain values (`EndedOrder`). docs/ENGINE.md, "Orders".
"""

import msgspec

from exchange.domain.accounts import Account, ClientOrderRecord
from exchange.domain.book import Order
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import PlaceOrder
from exchange.domain.events import Event, OrderAccepted, OrderRejected
from exchange.domain.limits import MAX_CLIENT_ORDER_IDS_PER_ACCOUNT
from exchange.domain.order_values import EndedOrder
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
            if isinstance(records[oldest][1], Order):
                ids.append(oldest)
            else:
                del records[oldest]
                return


def archive(order: Order) -> None:
    """Remember an ended order as plain values: its client order id may be resent."""
    records = order.account.client_orders
    records[order.client_order_id] = (records[order.client_order_id][0], order.ended())


def answer_resend(
    cmd: PlaceOrder, first: PlaceOrder, outcome: Order | EndedOrder | OrderRejected
) -> Event:
    """A place whose client order id was used before: repeat the answer, or refuse it."""
    if msgspec.structs.replace(cmd, ts=first.ts) != first:
        return order_rejected(
            cmd, Code.DUPLICATE_CLIENT_ORDER_ID, "client_order_id was used for another order"
        )
    if isinstance(outcome, OrderRejected):
        return outcome
    return OrderAccepted(
        order_id=outcome.order_id,
        account=cmd.account,
        client_order_id=cmd.client_order_id,
        symbol=first.symbol,
        side=first.side,
        type=first.type,
        tif=first.tif,
        price=outcome.price,
        qty=outcome.qty,
        remaining=outcome.remaining,
        status=outcome.status,
        post_only=first.post_only,
        ts=first.ts,  # an order's time is that of the place that created it
        resent=True,
        expire_at=first.expire_at,
        trigger_price=first.trigger_price,
        display_qty=first.display_qty,
        budget=first.max_notional if first.type == "stop" else 0,
    )
