"""A simulated market: agents that trade over the public WebSocket protocol around a hidden
fundamental value (`exchange simulate`, and `exchange serve --demo --simulate`)."""
