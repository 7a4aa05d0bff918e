"""The event journal: append-only, checksummed, hash-chained records on a segment store,
with snapshots of the engine's state that bound the replay on restart."""
