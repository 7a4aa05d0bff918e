"""The pure core: commands, events, the matching engine and its state.

Nothing in this package reads a clock, draws randomness, touches the disk or the
network, or depends on hash order: the same commands always give the same events.
"""
