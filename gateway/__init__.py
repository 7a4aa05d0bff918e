"""The network gateway: WebSocket order entry and market data, REST, and the client library."""
