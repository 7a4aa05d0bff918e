"""place_order and cancel_order take their command's fields in one `astuple` call, by
position: these are the positions they unpack (a new or moved field must be met there)."""

from exchange.domain.commands import CancelOrder, PlaceOrder


def test_a_place_has_the_fields_place_order_unpacks_in_their_order() -> None:
    assert PlaceOrder.__struct_fields__ == (
        "ts", "account", "client_order_id", "symbol", "side", "type", "price", "qty", "tif",
        "post_only", "stp", "max_notional", "expire_at", "trigger_price", "display_qty",
    )  # fmt: skip


def test_a_cancel_has_the_fields_cancel_order_unpacks_in_their_order() -> None:
    assert CancelOrder.__struct_fields__ == ("ts", "account", "order_id", "client_order_id")
