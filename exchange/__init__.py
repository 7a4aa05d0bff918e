"""The exchange: a pure matching core (`exchange.domain`) wrapped by a journal and a sequencer."""
