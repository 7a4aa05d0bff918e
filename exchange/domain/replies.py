"""The events that answer a command: refusals, and order events built in several rule modules.

Pure builders, no state: each rule module refuses through these so every refusal has one shape.
"""

from exchange.domain.book import Order
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import CancelAll, CancelOrder, Command, PlaceOrder, ReplaceOrder
from exchange.domain.events import (
    DoneReason,
    Event,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    Rejected,
)


def refuse(command: Command, code: Code, message: str, account: str = "") -> list[Event]:
    return [Rejected(command=type(command).__name__, code=code, message=message, account=account)]


def order_rejected(cmd: PlaceOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(
        account=cmd.account, code=code, message=message, client_order_id=cmd.client_order_id
    )


def cancel_rejected(cmd: CancelOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(
        account=cmd.account,
        code=code,
        message=message,
        client_order_id=cmd.client_order_id,
        order_id=cmd.order_id,
    )


def cancel_all_rejected(cmd: CancelAll, code: Code, message: str) -> OrderRejected:
    return OrderRejected(account=cmd.account, code=code, message=message)


def replace_rejected(cmd: ReplaceOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(account=cmd.account, code=code, message=message, order_id=cmd.order_id)


def cancelled(order: Order, reason: DoneReason) -> OrderCancelled:
    return OrderCancelled(
        order.order_id, order.account.account_id, order.client_order_id, order.symbol,
        order.side, order.price, order.remaining, reason,
    )


def replaced(order: Order, *, kept_priority: bool, remaining: int) -> OrderReplaced:
    return OrderReplaced(
        order_id=order.order_id,
        account=order.account.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=order.price,
        qty=order.qty,
        remaining=remaining,
        kept_priority=kept_priority,
    )
