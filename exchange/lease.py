"""Who should lead: a lease in a JetStream KV bucket, taken and kept by compare-and-set.

The bucket's stream keeps a key for LEASE_S (its `max_age`: NATS 2.9 has no per-key TTL,
see exchange/natsserver.py), so a leader that stops refreshing loses it LEASE_S after its
last refresh, and a standby that finds the key gone creates it (`create` succeeds for one
writer only). The leader refreshes with `update(last=revision)`: a refusal means someone
else holds it now. The lease is only a hint about who should try to append; the stream's
expected last sequence is the fence (exchange/sequencer_node.py), so two nodes that both
think they lead can never both append.
"""

import logging

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

BUCKET = "EXCHANGE_LEADER"
KEY = "leader"
# How long the lease outlives its last refresh. A dead leader is replaced this long after
# its last refresh (plus a standby's poll and its catch-up): short, for a takeover within
# the 5 s the API promises; long enough that a leader's loop stalled by a busy 2-core
# machine for a second does not lose it.
LEASE_S = 2.0
# A leader refreshes this often: four tries within a lease.
REFRESH_EVERY_S = LEASE_S / 4
# A standby tries to take a lapsed lease this often.
TRY_EVERY_S = 0.25


async def ensure_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The lease bucket (created if missing: R3 on three NATS nodes, as the stream)."""
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        config = api.KeyValueConfig(bucket=BUCKET, ttl=LEASE_S, history=1, replicas=replicas)
        return await js.create_key_value(config)


class Lease:
    """This node's hold on the lease: `revision` is None while it does not hold it."""

    def __init__(self, kv: KeyValue, node_id: str) -> None:
        self.kv = kv
        self.node_id = node_id
        self.revision: int | None = None

    @property
    def held(self) -> bool:
        return self.revision is not None

    async def try_take(self) -> bool:
        """Take the lease if it lapsed (or names this node: a restart of the holder);
        False when another node holds it."""
        value = self.node_id.encode()
        try:
            self.revision = await self.kv.create(KEY, value)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(KEY)
        except nats.js.errors.KeyNotFoundError:
            return False  # lapsed between the two calls: the next try creates it
        if entry.value != value or entry.revision is None:
            return False
        try:
            self.revision = await self.kv.update(KEY, value, last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def refresh(self) -> bool:
        """Keep the lease; False when it is lost (another node took it, or it lapsed and
        was taken). A NATS error other than a refusal raises: the next refresh retries."""
        if self.revision is None:
            return False
        try:
            self.revision = await self.kv.update(KEY, self.node_id.encode(), last=self.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self.revision = None
            return False
        return True

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for it to lapse."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        try:
            await self.kv.delete(KEY, last=revision)
        except Exception as problem:  # noqa: BLE001 - it lapses on its own anyway
            log.warning("could not release the leader lease: %r", problem)
