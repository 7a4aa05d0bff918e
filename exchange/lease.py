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
    """This node's hold on the lease: `revision` is None while it does not hold it. With
    `js`, a bucket found gone (the NATS store lost) is made again (as R1: the launcher
    makes it R3 at start) and the call tried once more, so a lost store never leaves the
    cluster with no one able to lead."""

    def __init__(self, kv: KeyValue, node_id: str, js: JetStreamContext | None = None) -> None:
        self.kv = kv
        self.node_id = node_id
        self.js = js
        self.revision: int | None = None

    async def _bucket_gone(self) -> bool:
        """Whether the bucket is gone; made again (and this hold dropped) if so."""
        if self.js is None:
            return False
        try:
            await self.js.stream_info(f"KV_{BUCKET}")
        except nats.js.errors.NotFoundError:
            log.warning("the leader lease's bucket is gone (the NATS store lost?): made again")
            self.kv = await ensure_bucket(self.js)
            return True
        return False

    @property
    def held(self) -> bool:
        return self.revision is not None

    async def try_take(self) -> bool:
        """Take the lease if it lapsed (or names this node: a restart of the holder);
        False when another node holds it."""
        try:
            return await self._try_take()
        except nats.js.errors.NoStreamResponseError:
            if await self._bucket_gone():
                return await self._try_take()
            raise

    async def _try_take(self) -> bool:
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
        except nats.js.errors.NoStreamResponseError:
            if not await self._bucket_gone():
                raise
            if await self._try_take():  # the holder takes it again in the new bucket
                return True
            self.revision = None
            return False
        return True

    async def confirm(self) -> bool:
        """Whether the key still names this node, read without writing (the refresher
        writes it meanwhile, so its revision is not compared): what a leader checks
        before it treats a stream shorter than it left as lost and refills it; a stale
        leader, whose lease another node took, must not. A NATS error raises."""
        if self.revision is None:
            return False
        value = self.node_id.encode()
        for _ in range(2):  # a second look when the key was made meanwhile
            try:
                return (await self.kv.get(KEY)).value == value
            except nats.js.errors.KeyNotFoundError:
                pass
            # Lapsed and not taken, or the bucket lost with the NATS store: this node may
            # hold it again only if it creates it now (no one else leads meanwhile). Only a
            # create, never an update: the refresher writes the key at the same time.
            await self._bucket_gone()
            try:
                self.revision = await self.kv.create(KEY, value)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # made meanwhile, by this node's refresher or another node
        return False

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for it to lapse."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        try:
            await self.kv.delete(KEY, last=revision)
        except Exception as problem:  # noqa: BLE001 - it lapses on its own anyway
            log.warning("could not release the leader lease: %r", problem)
