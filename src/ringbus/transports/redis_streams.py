"""A bridge over Redis Streams: many sim processes, many consumers, nothing lost silently.

:class:`RedisStreamSink` is a background transport: the bus's events are
appended to a stream (or to one of several partition streams, by a key)
from a sender thread, one entry per batch, so ``drain()`` never waits on
Redis. :class:`RedisStreamSource` reads the streams with a consumer group
into a local bus, acknowledges after the local drain together with the
state derived from the events, re-reads or claims what a crashed consumer
left unacknowledged, never publishes the same ``(producer, seq)`` twice,
blocks in Redis while idle, and reports what it finds missing.

Entry fields (plain JSON, readable by any Redis client): a batch entry has
``producer`` (the producing bus's ``config.name``), ``first_seq``,
``last_seq``, ``count``, ``prev_seq`` (the last seq the sink wrote to this
stream before, 0 for none) and ``events`` (a JSON array of the events'
``to_dict()`` objects, oldest first); a per-event entry has ``producer``,
``seq``, ``prev_seq`` and ``event`` (one ``to_dict()`` object).

Needs the ``redis`` extra: ``pip install 'ringbus[redis]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._normalise import FIELDS as EVENT_FIELDS
from .._normalise import check_option_count
from ._base import (
    BackgroundTransport,
    Record,
    SendFailed,
    SeqRanges,
    Transform,
    encode_json,
    validate_event_dict,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "as_text",
    "ORIGIN_SEQ_TAG",
    "PRODUCER_TAG",
    "PartitionLost",
    "RedisStreamSink",
    "RedisStreamSource",
    "close_client",
    "connect",
    "is_cluster",
    "origin_of",
    "partition_of",
    "partition_streams",
    "slot_tag",
]

logger = logging.getLogger("ringbus.redis")

#: Tag prefixes a source adds to each event it publishes locally.
PRODUCER_TAG = "producer:"
ORIGIN_SEQ_TAG = "origin_seq:"

CommitHook = Callable[[Any], object]

_encode = encode_json
_EVENT_KEYS = frozenset(EVENT_FIELDS)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ringbus.transports.redis_streams needs redis-py: pip install 'ringbus[redis]'"
        ) from None
    return redis


def connect(
    url: str = "redis://127.0.0.1:6379/0", *, timeout: float = 1.0, cluster: bool = False
) -> Any:
    """A Redis client that fails fast: ``timeout`` seconds per call, no hidden retries.

    The bridge does its own retrying (backoff in ticks), so a server that is
    gone costs one short failed call per attempt instead of a stalled loop.
    With ``cluster=True``, a ``redis.cluster.RedisCluster`` that finds the
    cluster's nodes from the one ``url`` names.
    """
    redis_module = _import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    client: redis.Redis = redis_module.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a redis-py cluster client (``redis.cluster.RedisCluster``)."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return isinstance(client, RedisCluster)


def close_client(client: Any) -> None:
    """Close a client's connections (every node's, for a cluster client)."""
    client.close()
    manager = getattr(client, "nodes_manager", None)
    if manager is None:
        return
    nodes = [*manager.startup_nodes.values(), *manager.nodes_cache.values()]
    for node in nodes:  # redis-py keeps the first node's pool apart: close it too
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


def slot_tag(stream: str, partitions: int, index: int) -> str:
    """The hash tag that puts a partition's keys in one Redis Cluster hash slot.

    ``"{p<index>}"`` for a partitioned stream; ``"{<stream>}"`` for a single
    stream (the slot of the stream key itself).
    """
    return f"{{p{index}}}" if partitions > 1 else f"{{{stream}}}"


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def origin_of(event: Any) -> tuple[str, int] | None:
    """``(producer, seq)`` of an event a :class:`RedisStreamSource` published, else ``None``."""
    producer: str | None = None
    seq: int | None = None
    for tag in event.tags:
        if tag.startswith(PRODUCER_TAG):
            producer = tag[len(PRODUCER_TAG) :]
        elif tag.startswith(ORIGIN_SEQ_TAG):
            seq = int(tag[len(ORIGIN_SEQ_TAG) :])
    if producer is None or seq is None:
        return None
    return producer, seq


def partition_of(key: object, partitions: int) -> int:
    """The partition (``0 .. partitions - 1``) of a key: a stable hash, the same in every process.

    ``None`` goes to partition 0; other keys by ``blake2b(str(key))``, as
    the bus's load-balanced groups hash (never Python's salted ``hash()``).
    """
    if partitions <= 1 or key is None:
        return 0
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def partition_streams(stream: str, partitions: int) -> list[str]:
    """The stream keys of a partitioned stream: ``stream`` itself for one partition.

    With several, ``"<stream>:{p<N>}"``: the hash tag puts each partition's
    stream and its consumers' state (see :class:`RedisStreamSource`) in one
    Redis Cluster hash slot.
    """
    check_option_count("partitions", partitions)
    if partitions == 1:
        return [stream]
    return [f"{stream}:{{p{index}}}" for index in range(partitions)]


def _entry_id(value: object) -> tuple[int, int]:
    text = as_text(value)
    millis, _, seq = text.partition("-")
    return int(millis), int(seq or 0)


class RedisStreamSink(BackgroundTransport):
    """Append the bus's events to a Redis stream from a background sender.

    ``drain()`` only hands its events over (see
    :class:`~ringbus.transports.BackgroundTransport`): a slow, frozen or
    dead Redis costs the loop nothing; the events queue (up to
    ``max_buffer``, then the overflow policy applies, every drop counted,
    logged and reported as a ``DATA_LOSS`` event) and are sent, in order,
    once the server answers again.

    **On the wire.** By default each batch (at most ``batch_size`` events)
    is one stream entry per partition, with the fields ``producer`` (the
    bus's ``config.name``), ``first_seq``, ``last_seq``, ``count``,
    ``prev_seq`` (the last seq this sink wrote to that stream before, 0 for
    none: a reader that saw a lower one knows entries are missing) and
    ``events``, a JSON array of the events' ``to_dict()`` objects, oldest
    first. ``per_event=True`` writes one entry per event instead (fields
    ``producer``, ``seq``, ``prev_seq``, ``event``), pipelined. Both are
    plain JSON that any Redis client can read; :class:`RedisStreamSource`
    reads both.

    **Partitions.** With ``partitions=N`` each event goes to one of the N
    streams :func:`partition_streams` names, chosen by :func:`partition_of`
    of its ``key`` field (default ``polity_id``): events with one key keep
    their order in one stream while consumers share the streams.

    **Lost data.** After a failed send or a new connection (its client id
    changed: the server may have restarted), the sink checks, before sending
    again, that each stream it wrote still ends at or after the last entry
    it wrote; a stream that is gone or shorter (Redis restarted without its
    data) is logged and reported as a ``DATA_LOSS`` event with the seq
    ranges of the entries it no longer holds, and counted in
    ``redis_data_losses``.

    Parameters
    ----------
    client
        A ``redis.Redis`` (or ``redis.cluster.RedisCluster``); ``None``
        connects to ``url`` with :func:`connect`. Only the sender thread
        uses it.
    url
        Used when ``client`` is ``None``.
    cluster
        With ``client`` ``None``: connect to the Redis Cluster that ``url``
        is a node of. Each partition stream lives in its own hash slot
        (:func:`partition_streams`); a batch's appends go to each node in
        one pipeline.
    stream
        The stream key (the prefix of the partitions' keys).
    partitions, key
        Number of partition streams, and the event field that picks one.
    per_event
        One entry per event instead of one per batch.
    maxlen
        Bound on each stream's length in entries (approximate trimming
        unless ``exact_maxlen``).
    **options
        ``transform``, ``max_buffer``, ``batch_size``, ``overflow``,
        ``block_timeout``, ``retry_base``, ``retry_max``, ``report_every``,
        ``name``: see :class:`~ringbus.transports.BackgroundTransport`.

    Examples
    --------
    A worker sends everything its bus drains, and flushes before it exits::

        bus = EventBus(EventBusConfig(name="world-1"))
        sink = RedisStreamSink(url="redis://127.0.0.1:6379/0", stream="world:events").attach(bus)
        ...
        sink.close(timeout=10)
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        cluster: bool = False,
        stream: str = "ringbus:events",
        partitions: int = 1,
        key: str = "polity_id",
        per_event: bool = False,
        maxlen: int = 100_000,
        exact_maxlen: bool = False,
        transform: Transform | None = None,
        max_buffer: int = 100_000,
        batch_size: int = 1_000,
        name: str | None = None,
        **options: Any,
    ) -> None:
        self._logger = logger
        check_option_count("maxlen", maxlen)
        self.streams = partition_streams(stream, partitions)
        if key not in EVENT_FIELDS:
            raise ValueError(f"key must be an event field ({', '.join(EVENT_FIELDS)}), got {key!r}")
        super().__init__(
            transform=transform,
            max_buffer=max_buffer,
            batch_size=batch_size,
            name=name or "redis",
            **options,
        )
        self.client: Any = client if client is not None else connect(url, cluster=cluster)
        self.cluster = is_cluster(self.client)
        self.stream = stream
        self.partitions = partitions
        self.key = key
        self.per_event = bool(per_event)
        self.maxlen = maxlen
        self.exact_maxlen = bool(exact_maxlen)
        self.entries = 0
        self.pipelines = 0
        self.last_sent_seq = 0
        self.redis_data_losses = 0
        self._prev: dict[str, int] = {}
        self._last_ids: dict[str, tuple[int, int]] = {}
        self._written: dict[str, deque[tuple[tuple[int, int], int, int, int]]] = {}
        self._suspect = False
        self._connection: object = None

    # -- sending (the sender thread) -------------------------------------
    def _entries(self, records: list[tuple[int, Record]]) -> list[tuple[str, dict[str, Any], int]]:
        """``(stream, fields, count)`` for each entry to append, oldest first."""
        by_stream: dict[str, list[tuple[int, Record]]] = {}
        streams, partitions, key = self.streams, self.partitions, self.key
        for seq, record in records:
            stream = (
                streams[partition_of(record.get(key), partitions)] if partitions > 1 else streams[0]
            )
            by_stream.setdefault(stream, []).append((seq, record))
        producer = self.producer
        out: list[tuple[str, dict[str, Any], int]] = []
        for stream, items in by_stream.items():
            prev = self._prev.get(stream, 0)
            if self.per_event:
                for seq, record in items:
                    text = self._encode_one(seq, record)
                    if text is not None:
                        fields = {"producer": producer, "seq": seq, "prev_seq": prev, "event": text}
                        out.append((stream, fields, 1))
                        prev = seq
                continue
            try:
                text = _encode([record for _seq, record in items])
            except (TypeError, ValueError):
                kept = [(seq, r) for seq, r in items if self._encode_one(seq, r) is not None]
                if not kept:
                    continue
                items, text = kept, _encode([record for _seq, record in kept])
            fields = {
                "producer": producer,
                "first_seq": items[0][0],
                "last_seq": items[-1][0],
                "count": len(items),
                "prev_seq": prev,
                "events": text,
            }
            out.append((stream, fields, len(items)))
        return out

    def _encode_one(self, seq: int, record: Record) -> str | None:
        try:
            return _encode(record)
        except (TypeError, ValueError) as error:
            self.invalid += 1
            self.last_invalid = [f"seq {seq}: {error}"]
            return None

    def _send(self, records: list[tuple[int, Record]]) -> int:
        redis_module = _import_redis()
        entries = self._entries(records)
        if not entries:
            return 0
        try:
            connection = self._connection_ids()
            if connection != self._connection and self._connection is not None:
                self._suspect = True  # connected again: the server may have restarted
            self._connection = connection
            if self._suspect:
                self._check_streams()
            replies = self._append(entries, known=True)
            missing = [
                entry for entry, reply in zip(entries, replies, strict=True) if reply is None
            ]
            if missing:  # NOMKSTREAM: the stream is gone although we wrote to it
                for stream in dict.fromkeys(stream for stream, _f, _c in missing):
                    self._stream_lost(stream, None)
                again = self._append(missing, known=False)
                replies = [
                    again[missing.index(entry)] if reply is None else reply
                    for entry, reply in zip(entries, replies, strict=True)
                ]
        except redis_module.RedisError as error:
            self._suspect = True
            raise SendFailed(f"{type(error).__name__}: {error}") from None
        self._suspect = False
        for (stream, fields, count), reply in zip(entries, replies, strict=True):
            entry_id = _entry_id(reply)
            last = int(fields.get("last_seq", fields.get("seq", 0)))
            first = int(fields.get("first_seq", last))
            self._last_ids[stream] = entry_id
            self._prev[stream] = last
            self._written.setdefault(stream, deque(maxlen=10_000)).append(
                (entry_id, first, last, count)
            )
        self.pipelines += 1
        self.entries += len(entries)
        self.last_sent_seq = max(self.last_sent_seq, records[-1][0])
        return sum(count for _stream, _fields, count in entries)

    def _connection_ids(self) -> object:
        """The server's id of this client's connection (one per node of a cluster)."""
        if not self.cluster:
            return self.client.client_id()
        return {
            node.name: self.client.execute_command("CLIENT ID", target_nodes=node)
            for node in self.client.get_nodes()
        }

    def _append(self, entries: list[tuple[str, dict[str, Any], int]], *, known: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        try:
            for stream, fields, _count in entries:
                pipe.xadd(
                    stream,
                    fields,
                    maxlen=self.maxlen,
                    approximate=not self.exact_maxlen,
                    nomkstream=known and stream in self._last_ids,
                )
            return list(pipe.execute())
        finally:
            pipe.reset()

    def _check_streams(self) -> None:
        """After a failure: does every stream still hold the last entry written to it?"""
        redis_module = _import_redis()
        for stream, last_id in list(self._last_ids.items()):
            try:
                info = self.client.xinfo_stream(stream)
            except redis_module.ResponseError as error:
                if "no such key" not in str(error).lower():
                    raise
                self._stream_lost(stream, None)
                continue
            server_last = _entry_id(info.get("last-generated-id", b"0-0"))
            if server_last < last_id:
                self._stream_lost(stream, server_last)

    def _stream_lost(self, stream: str, server_last: tuple[int, int] | None) -> None:
        """Report entries that Redis no longer holds (``None``: the whole stream is gone)."""
        written = self._written.get(stream, deque())
        lost = [item for item in written if server_last is None or item[0] > server_last]
        ranges = SeqRanges()
        for _id, first, last, count in lost:
            ranges.add_run(first, last, count)
        if server_last is None:
            reason = (
                f"stream {stream!r} is gone (Redis restarted without its data?): the entries "
                "written to it are lost unless a consumer had read them"
            )
            self._last_ids.pop(stream, None)
        else:
            reason = (
                f"stream {stream!r} ends before the last entry written to it (Redis lost "
                "recent writes)"
            )
            self._last_ids[stream] = server_last
        # prev_seq keeps naming the last seq written, so readers can tell what they missed
        self._written[stream] = deque(maxlen=10_000)
        with self._cond:
            self.redis_data_losses += 1
            self._episode = True
            for first, last in ranges.ranges:
                self._lost.add_run(first, last, 0)
            self._lost.events += ranges.events
            if reason not in self._lost_reasons:
                self._lost_reasons.append(reason)
        self._logger.warning("%s: %s", self.name, reason)

    def close(self, timeout: float = 5.0) -> bool:
        """:meth:`BackgroundTransport.close`, then close the client's connections."""
        try:
            return super().close(timeout)
        finally:
            if self._thread is None or not self._thread.is_alive():
                close_client(self.client)

    def last_seqs(self) -> dict[str, int]:
        """The last seq written to each stream (what a consumer has applied once it is done)."""
        return dict(sorted(self._prev.items()))

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            stream=self.stream,
            partitions=self.partitions,
            entries=self.entries,
            pipelines=self.pipelines,
            last_sent_seq=self.last_sent_seq,
            redis_data_losses=self.redis_data_losses,
        )
        return status


def _commit_listener(source: RedisStreamSource) -> Callable[[], object]:
    """The drain listener of ``source``: it commits, without keeping the source alive.

    The bus holds its listeners; a listener that held the source would make
    bus and source a cycle, and a Redis client in a cycle is collected with
    its socket still open.
    """
    ref = weakref.ref(source)

    def commit() -> object:
        alive = ref()
        return None if alive is None else alive.commit()

    return commit


class _Partition:
    """What a source keeps for one stream it reads."""

    __slots__ = (
        "claim_idle_ms",
        "committed",
        "cursor",
        "hwm",
        "lease_key",
        "owned",
        "phase",
        "recovered",
        "state_key",
        "stream",
        "tag",
        "to_ack",
    )

    def __init__(
        self, stream: str, state_key: str, lease_key: str, claim_idle_ms: int, tag: str
    ) -> None:
        self.stream = stream
        self.tag = tag
        self.state_key = state_key
        self.lease_key = lease_key
        self.claim_idle_ms = claim_idle_ms
        self.owned = True
        self.hwm: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self.to_ack: list[Any] = []
        self.phase = "own"  # own pending -> claim from others -> new entries
        self.cursor = "0-0"
        self.recovered = False


StopSignal = threading.Event | Callable[[], bool] | None

#: Extend a lease only if this consumer still holds it.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
#: Give a lease up only if this consumer holds it.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end"
)


class PartitionLost(RuntimeError):
    """A consumer's lease on a partition ran out while it held uncommitted events.

    Another consumer owns the partition now and re-reads those entries; the
    events this consumer applied locally since its last commit must be
    forgotten: restart it from its committed state (what its commit hooks
    stored).
    """


class RedisStreamSource:
    """Read Redis streams with a consumer group into a local bus, applying each event once.

    Each event read is published on the local bus with its original
    fields (a new local seq) plus two tags, ``producer:<name>`` and
    ``origin_seq:<seq>`` (read them back with :func:`origin_of`). After the
    local drain that dispatched them, one Redis transaction acknowledges the
    entries (``XACK``), records the highest seq applied per producer in the
    hash ``state_key`` (one per stream), and runs the commit hooks (see
    :meth:`add_commit_hook`), so what the consumer derived is stored with the
    acknowledgement or not at all: **applied state is exactly once** per
    ``(producer, seq)``. A handler's side effects outside that state (a log
    line, a message sent) are **at least once**: a consumer killed between
    its drain and its commit does them again when the entries are re-read;
    make them exactly once by writing them in a commit hook, in the same
    transaction (see the README).

    Restarted after a crash, the source first re-reads its own unacknowledged
    entries, then claims entries other consumers of the group left idle for
    ``claim_idle_ms`` (``XAUTOCLAIM``), then reads new ones; entries whose seq
    is at or below the producer's recorded high-water mark are acknowledged
    without being published, so no ``(producer, seq)`` is published twice and
    each producer's order is kept. Producer names must therefore be unique:
    a producer that starts again from seq 1 needs a new name (or a bus
    restored from a snapshot, which continues the seqs).

    Reads entries written by :class:`RedisStreamSink` one per batch or one per
    event. Entries that are not valid events are acknowledged, counted in
    ``invalid`` and copied to the stream ``dead_letter_stream``.

    **Losses are reported.** An entry whose ``prev_seq`` is above what the
    source applied from that producer means entries are missing (trimmed by
    the stream's length bound before they were read, or lost by Redis): the
    seq range is logged, counted in ``lost`` and published on the local bus
    as a ``DATA_LOSS`` event. When the group itself is gone (``NOGROUP``:
    Redis restarted without its data), the source re-creates it at the
    start of what the stream now holds, keeps its high-water marks (so
    nothing applied is applied again), reports the loss and goes on;
    :meth:`status` says ``"recovering"`` until the next commit.

    **Redis Cluster.** With a cluster client (``cluster=True``, or a
    ``redis.cluster.RedisCluster`` passed in) every key of a partition
    carries its hash tag (:func:`slot_tag`): the stream, the high-water
    marks, the lease, the rejected entries (``"<dead_letter_stream>:{p<N>}"``),
    so each partition lives in one hash slot, on one node. A poll reads one
    partition (new entries: each owned partition in turn, blocking up to
    100 ms in each while idle), and each commit is one transaction per
    partition; commit hooks run inside it and must write keys of that slot:
    name them with :meth:`slot_key`. Per-partition state written as a delta
    (what was applied since the last commit) stays exactly once.

    Keep a reference to the source while it runs: the bus's drain listener
    does not keep it alive. :meth:`close` stops it and closes its connections.

    Parameters
    ----------
    bus
        The local bus to publish into (``clock_policy="free"``).
    client
        A ``redis.Redis`` or ``redis.cluster.RedisCluster``; ``None``
        connects to ``url`` with :func:`connect`.
    url
        Used when ``client`` is ``None``.
    stream, group, consumer
        The stream, the consumer group (created when missing) and this
        consumer's name (keep it across restarts).
    partitions
        Read the ``partitions`` streams a partitioned sink writes
        (:func:`partition_streams`) instead of ``stream`` itself.
    count
        Largest number of entries read per :meth:`poll` and stream (a batch
        entry holds up to the sink's ``batch_size`` events).
    claim_idle_ms
        How long another consumer's entry must have been idle to be claimed.
    state_key
        Hash of high-water marks of a single stream (default
        ``"<stream>:<group>:hwm"``, the pattern every partition uses; in a
        cluster ``"<stream>:<group>:hwm:{<stream>}"``, in the stream's slot).
    dead_letter_stream
        Where invalid entries go (default ``"<stream>:rejected"``; in a
        cluster, one stream per partition with the partition's hash tag).
    cluster
        With ``client`` ``None``: connect to the Redis Cluster that ``url``
        is a node of.
    """

    def __init__(
        self,
        bus: Any,
        client: redis.Redis | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        stream: str = "ringbus:events",
        group: str = "ringbus",
        consumer: str = "consumer-1",
        partitions: int = 1,
        count: int = 20,
        claim_idle_ms: int = 30_000,
        lease_ms: int = 10_000,
        state_key: str | None = None,
        dead_letter_stream: str | None = None,
        cluster: bool = False,
    ) -> None:
        check_option_count("count", count)
        check_option_count("lease_ms", lease_ms)
        streams = partition_streams(stream, partitions)
        if getattr(bus, "clock_policy", "free") != "free":
            raise ValueError(
                "a RedisSource republishes events with their producers' own ticks and days, "
                "which interleave: give its bus EventBusConfig(clock_policy='free')"
            )
        if state_key is not None and partitions > 1:
            raise ValueError("state_key names one stream's hash: leave it out with partitions")
        self.bus = bus
        self.client: Any = client if client is not None else connect(url, cluster=cluster)
        self.cluster = is_cluster(self.client)
        if self.cluster and not hasattr(_import_redis().cluster, "TransactionStrategy"):
            raise ImportError(
                "a RedisStreamSource on a Redis Cluster needs a redis-py whose cluster "
                "pipelines run transactions: pip install -U redis"
            )
        if self.cluster and partitions == 1 and state_key is None:
            state_key = f"{stream}:{group}:hwm:{slot_tag(stream, 1, 0)}"
        self.committing: str | None = None
        self._next_part = 0
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.name = f"redis-source:{consumer}"
        self.count = count
        self.claim_idle_ms = claim_idle_ms
        self.state_key = state_key or f"{stream}:{group}:hwm"
        self.dead_letter_stream = dead_letter_stream or f"{stream}:rejected"
        self.lease_ms = lease_ms
        self.shared = partitions > 1
        self.members_key = f"{stream}:{group}:members"
        self._parts = {
            name: _Partition(
                name,
                self.state_key if len(streams) == 1 else f"{name}:{group}:hwm",
                f"{name}:{group}:owner",
                claim_idle_ms,
                slot_tag(stream, partitions, index),
            )
            for index, name in enumerate(streams)
        }
        if self.shared:
            for part in self._parts.values():
                part.owned = False
        self._next_balance = 0.0
        self.acquired = 0
        self.released = 0
        self.leases_lost = 0
        self._hooks: list[CommitHook] = []
        self._to_reject: list[tuple[_Partition, dict[str, str]]] = []
        self._last_local_seq = 0
        self._started = False
        self._failing = False
        self._recovering = False
        self.published = 0
        self.duplicates = 0
        self.invalid = 0
        self.redelivered = 0
        self.trimmed = 0
        self.gaps = 0
        self.lost = 0
        self.loss_reports = 0
        self.recoveries = 0
        self.commits = 0
        self.reads = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_loss: str | None = None
        self.last_invalid: deque[str] = deque(maxlen=20)
        self._listener = _commit_listener(self)
        bus.add_drain_listener(self._listener)

    @property
    def streams(self) -> list[str]:
        """The stream keys this source reads."""
        return list(self._parts)

    # -- setup ---------------------------------------------------------
    def start(self) -> None:
        """Create the group where missing and load the high-water marks (done by :meth:`poll`)."""
        for part in self._parts.values():
            self._create_group(part.stream)
            self._load_marks(part)
        self._started = True

    def _load_marks(self, part: _Partition) -> None:
        stored = self.client.hgetall(part.state_key)
        part.hwm = {as_text(key): int(value) for key, value in stored.items()}
        part.committed = dict(part.hwm)

    # -- sharing partitions ----------------------------------------------
    def owned_streams(self) -> list[str]:
        """The streams this consumer reads now (all of them unless partitions are shared)."""
        return [name for name, part in self._parts.items() if part.owned]

    def _balance(self) -> None:
        """Heartbeat, renew this consumer's leases, and take or give partitions for a fair share.

        Consumers of a group divide the partitions: each one holds a lease
        (``<partition>:<group>:owner``, ``lease_ms`` long, renewed here) on
        the ones it reads. A consumer that stops renewing loses them after
        ``lease_ms``; the others then take them over, claim their pending
        entries and continue from their committed high-water marks.
        """
        now = time.monotonic()
        if now < self._next_balance:
            return
        joining = self._next_balance == 0.0
        self._next_balance = now + self.lease_ms / 8000.0
        client, me, lease = self.client, self.consumer, self.lease_ms
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        pipe = client.pipeline(transaction=False)
        pipe.zadd(self.members_key, {me: now_ms})
        pipe.zremrangebyscore(self.members_key, "-inf", now_ms - lease)
        pipe.zcard(self.members_key)
        live = max(1, int(pipe.execute()[2]))
        parts = list(self._parts.values())
        fair = -(-len(parts) // live)
        for part in parts:
            if part.owned and not client.eval(_RENEW, 1, part.lease_key, me, lease):
                self._lose_lease(part)
        owned = [part for part in parts if part.owned]
        for part in reversed(owned):
            if len(owned) <= fair:
                break
            if part.to_ack:
                continue
            client.eval(_RELEASE, 1, part.lease_key, me)
            part.owned = False
            owned.remove(part)
            self.released += 1
        if joining:  # let consumers started at the same time register before sharing out
            return
        start = int.from_bytes(hashlib.blake2b(me.encode(), digest_size=4).digest(), "big")
        for index in range(len(parts)):
            if len(owned) >= fair:
                break
            part = parts[(start + index) % len(parts)]
            if part.owned:
                continue
            if client.set(part.lease_key, me, nx=True, px=lease) or (
                as_text(client.get(part.lease_key) or b"") == me
                and client.eval(_RENEW, 1, part.lease_key, me, lease)
            ):
                self._load_marks(part)
                part.owned = True
                part.phase, part.cursor = "own", "0-0"
                part.claim_idle_ms = 0  # the lease ran out: its entries are no one's now
                owned.append(part)
                self.acquired += 1
                logger.info("%s: reads %s now", self.name, part.stream)

    def _lose_lease(self, part: _Partition) -> None:
        self._lose_leases([part])

    def _lose_leases(self, parts: list[_Partition]) -> None:
        """Forget these partitions; raise :class:`PartitionLost` if work in them is uncommitted."""
        held = 0
        for part in parts:
            part.owned = False
            self.leases_lost += 1
            held += len(part.to_ack)
            part.to_ack = []
            logger.warning(
                "%s: lost the lease on %s (no renewal within %d ms)",
                self.name,
                part.stream,
                self.lease_ms,
            )
        if held:
            names = ", ".join(repr(part.stream) for part in parts)
            raise PartitionLost(
                f"{self.name}: the lease on {names} ran out with {held} entries applied "
                "but not committed; another consumer re-reads them: restart this consumer from "
                "its committed state"
            )

    def _create_group(self, stream: str) -> bool:
        redis_module = _import_redis()
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis_module.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            return False
        return True

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Run ``hook(pipeline)`` inside each commit transaction.

        Queue writes on the redis-py pipeline (e.g. the aggregate state the
        local subscribers derived, or the side effects of handlers, such as
        an outbox list); they are applied atomically with the
        acknowledgements and the high-water marks.
        """
        if not callable(hook):
            raise TypeError("a commit hook must be callable and take the pipeline")
        self._hooks.append(hook)

    def high_water_marks(self) -> dict[str, int]:
        """The highest seq applied per producer (committed or about to be), over every stream."""
        marks: dict[str, int] = {}
        for part in self._parts.values():
            for producer, seq in part.hwm.items():
                marks[producer] = max(seq, marks.get(producer, 0))
        return dict(sorted(marks.items()))

    def stream_marks(self) -> dict[str, dict[str, int]]:
        """The highest seq applied per producer, per stream."""
        return {name: dict(sorted(part.hwm.items())) for name, part in self._parts.items()}

    @property
    def uncommitted(self) -> int:
        """Entries read but not yet acknowledged."""
        return sum(len(part.to_ack) for part in self._parts.values())

    # -- reading -------------------------------------------------------
    def _block_ms(self, timeout: float | None) -> int | None:
        """Milliseconds one ``XREADGROUP ... BLOCK`` may wait within the client's socket timeout."""
        if timeout is None or timeout <= 0:
            return None
        wait = timeout
        holder = getattr(self.client, "nodes_manager" if self.cluster else "connection_pool", None)
        kwargs = getattr(holder, "connection_kwargs", {})
        socket_timeout = kwargs.get("socket_timeout")
        if socket_timeout:
            wait = min(wait, max(0.01, float(socket_timeout) * 0.8))
        if self.shared:  # wake up in time to renew the leases
            wait = min(wait, self.lease_ms / 8000.0)
        return max(1, int(wait * 1000))

    def _read(self, timeout: float | None) -> list[tuple[_Partition, Any, Any]]:
        count = self.count
        owned = [part for part in self._parts.values() if part.owned]
        if not owned:  # every partition is someone else's: wait for the next balance
            if timeout:
                time.sleep(min(timeout, self.lease_ms / 8000.0))
            return []
        for part in owned:
            if part.phase == "own":
                reply = self.client.xreadgroup(
                    self.group, self.consumer, {part.stream: "0"}, count=count
                )
                entries = reply[0][1] if reply else []
                if entries:
                    self.redelivered += len(entries)
                    return [(part, entry_id, fields) for entry_id, fields in entries]
                part.phase = "claim"
            while part.phase == "claim":  # one pass over the group's pending entries
                reply = self.client.xautoclaim(
                    part.stream,
                    self.group,
                    self.consumer,
                    part.claim_idle_ms,
                    start_id=part.cursor,
                    count=count,
                )
                cursor, claimed = as_text(reply[0]), reply[1]
                if len(reply) > 2 and reply[2]:
                    # Redis >= 7 drops pending entries that trimming deleted: count them.
                    self.trimmed += len(reply[2])
                    self.last_invalid.append(
                        f"{len(reply[2])} pending entries were trimmed from {part.stream!r} "
                        "before they were read"
                    )
                part.cursor = cursor
                if cursor == "0-0":
                    part.phase = "new"
                    part.claim_idle_ms = self.claim_idle_ms
                if claimed:
                    self.redelivered += len(claimed)
                    return [(part, entry_id, fields) for entry_id, fields in claimed]
        if self.cluster:
            return self._read_slots(owned, timeout)
        streams = {part.stream: ">" for part in owned}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = None if deadline is None else self._block_ms(deadline - time.monotonic())
            reply = self.client.xreadgroup(
                self.group, self.consumer, streams, count=count, block=block
            )
            if reply or block is None or deadline is None or time.monotonic() >= deadline:
                break
        return [
            (self._parts[as_text(name)], entry_id, fields)
            for name, entries in reply or []
            for entry_id, fields in entries
        ]

    def _read_slots(
        self, owned: list[_Partition], timeout: float | None
    ) -> list[tuple[_Partition, Any, Any]]:
        """New entries from a cluster: one partition (one hash slot) per read, in turn.

        A first pass reads each owned partition without blocking; then, while
        ``timeout`` lasts, each one in turn blocks for at most 100 ms.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        first = True
        while True:
            for _ in range(len(owned)):
                part = owned[self._next_part % len(owned)]
                self._next_part += 1
                block = None
                if not first and deadline is not None:
                    block = self._block_ms(min(0.1, deadline - time.monotonic()))
                reply = self.client.xreadgroup(
                    self.group, self.consumer, {part.stream: ">"}, count=self.count, block=block
                )
                if reply:
                    return [
                        (part, entry_id, fields)
                        for _name, entries in reply
                        for entry_id, fields in entries
                    ]
                if not first and (deadline is None or time.monotonic() >= deadline):
                    return []
            if deadline is None or time.monotonic() >= deadline:
                return []
            first = False

    def poll(self, timeout: float | None = None) -> int:
        """Read up to ``count`` entries and publish their events on the local bus.

        Nothing new is read while entries from the last poll are still
        unacknowledged (call the bus's ``drain()``, which commits). With a
        ``timeout`` (seconds), waits that long for new entries
        (``XREADGROUP ... BLOCK``): an idle consumer sleeps in Redis instead
        of spinning. Returns how many entries were read — published, or
        skipped as duplicates or invalid (see the counters); 0 means nothing
        arrived. A Redis error is counted in ``failed`` (``last_error`` says
        which) and returns 0; a group that is gone is re-created (see the
        class).
        """
        redis_module = _import_redis()
        if self.uncommitted:
            self.commit()
            if self.uncommitted:
                return 0
        try:
            if not self._started:
                self.start()
            if self.shared:
                self._balance()
            entries = self._read(timeout)
        except redis_module.ResponseError as error:
            if "NOGROUP" in str(error):
                self._recover_groups()
                return 0
            self._failure(error)
            return 0
        except redis_module.RedisError as error:
            self._failure(error)
            return 0
        self._failing = False
        self.reads += 1
        published = 0
        try:
            for part, entry_id, fields in entries:
                if self._publish_entry(part, entry_id, fields):
                    published += 1
                part.to_ack.append(entry_id)
        except BaseException:
            # e.g. the local bus's pending queue is full: the entries not
            # handled stay unacknowledged; read them again from this
            # consumer's pending list (the published ones are skipped then).
            for part in self._parts.values():
                part.phase = "own"
            raise
        if entries and not published:
            self.commit()
        return len(entries)

    def run(
        self,
        stop: StopSignal = None,
        *,
        timeout: float = 1.0,
        idle_exit: float | None = None,
    ) -> int:
        """Poll and drain until ``stop`` is set (or returns true); return the entries read.

        Each poll blocks up to ``timeout`` seconds waiting for entries, so an
        idle consumer uses almost no CPU and ``stop`` is seen within about
        ``timeout``. While Redis cannot be reached, polls are spaced out (up
        to ``timeout``). ``idle_exit``: also return after that many seconds
        with nothing read.

        Parameters
        ----------
        stop
            A :class:`threading.Event`, or a callable returning true to stop.
        timeout
            Longest wait of one poll, in seconds.
        idle_exit
            Return once nothing has arrived for this long (``None``: never).
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")

        def stopped() -> bool:
            if stop is None:
                return False
            if isinstance(stop, threading.Event):
                return stop.is_set()
            return bool(stop())

        total = 0
        pause = 0.01
        idle_since = time.monotonic()
        while not stopped():
            read = self.poll(timeout=timeout)
            self.bus.drain()
            total += read
            if read:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                break
            if self._failing:  # Redis is unreachable: poll returned at once
                if isinstance(stop, threading.Event):
                    stop.wait(pause)
                else:
                    time.sleep(pause)
                pause = min(timeout, pause * 2)
            else:
                pause = 0.01
        self.bus.drain()
        return total

    def _failure(self, error: Exception) -> None:
        self.failed += 1
        self._failing = True
        self.last_error = f"{type(error).__name__}: {error}"

    def _recover_groups(self) -> None:
        """The group is gone (Redis lost its data): re-create it, keep the marks, report."""
        redis_module = _import_redis()
        try:
            for part in self._parts.values():
                if self._create_group(part.stream):
                    self._lose_group(part)
        except redis_module.RedisError as error:
            self._failure(error)
            return
        for part in self._parts.values():
            part.phase, part.cursor = "own", "0-0"

    def _lose_group(self, part: _Partition) -> None:
        self.recoveries += 1
        self._recovering = True
        part.to_ack = []  # those entries are gone with the group
        part.committed = {}  # the stored marks may be gone too: write them all again
        part.recovered = True
        marks = ", ".join(f"{producer} {seq}" for producer, seq in sorted(part.hwm.items()))
        message = (
            f"consumer group {self.group!r} of stream {part.stream!r} was gone (Redis lost its "
            f"data?): re-created; events after the last applied seqs ({marks or 'none'}) that "
            "were not read are lost, and are reported as their producers' next entries arrive"
        )
        self.last_loss = message
        logger.warning("%s: %s", self.name, message)

    def _report_lost(
        self, part: _Partition, producer: str, first: int, last: int, why: str
    ) -> None:
        from ..sim.health import publish_loss

        self.lost += last - first + 1
        self.loss_reports += 1
        reason = f"{why} (stream {part.stream!r}; seqs of kinds the sink does not send count too)"
        self.last_loss = f"{producer}: seqs {first}-{last}: {reason}"
        logger.warning(
            "%s: lost events of %s, seqs %d-%d: %s", self.name, producer, first, last, why
        )
        publish_loss(
            self.bus,
            reporter=self.name,
            producer=producer,
            reason=reason,
            events=last - first + 1,
            ranges=[[first, last]],
            total=self.lost,
        )

    def _reject(
        self, part: _Partition, entry_id: Any, fields: Any, problem: str, *, invalid: bool = True
    ) -> None:
        self.invalid += invalid
        self.last_invalid.append(f"{as_text(entry_id)}: {problem}")
        record = {"entry_id": as_text(entry_id), "problem": problem}
        for key, value in (fields or {}).items():
            record[f"field:{as_text(key)}"] = as_text(value)
        self._to_reject.append((part, record))

    def _publish_entry(self, part: _Partition, entry_id: Any, fields: Any) -> bool:
        """Publish the events of one entry; return whether any was published."""
        if not fields:  # trimmed away while pending
            self.trimmed += 1
            problem = "entry was trimmed from the stream before it was read"
            self._reject(part, entry_id, fields, problem, invalid=False)
            return False
        data = {as_text(key): value for key, value in fields.items()}
        try:
            producer = as_text(data["producer"])
            if "events" in data:
                records = json.loads(as_text(data["events"]))
                if not isinstance(records, list):
                    raise ValueError("events must be a JSON array")
            else:
                record = json.loads(as_text(data["event"]))
                seq = int(as_text(data["seq"]))
                records = [{**record, "seq": seq} if isinstance(record, dict) else record]
            prev = int(as_text(data["prev_seq"])) if "prev_seq" in data else None
        except (KeyError, ValueError, AttributeError) as error:
            self._reject(
                part, entry_id, fields, f"not a ringbus entry: {type(error).__name__}: {error}"
            )
            return False
        last = part.hwm.get(producer, 0)
        if prev is not None and prev > last:
            why = (
                "the group was re-created after Redis lost its data"
                if part.recovered
                else "entries are missing from the stream (trimmed before they were read, or "
                "lost by Redis)"
            )
            self._report_lost(part, producer, last + 1, prev, why)
        published = False
        publish = self.bus.publish
        hwm = part.hwm
        for record in records:
            # The shape here; the field values are checked by the bus's publish, which
            # holds every event to the schema (a refused record is rejected, not fatal).
            if (
                type(record) is not dict
                or record.keys() != _EVENT_KEYS
                or type(record["seq"]) is not int
                or record["seq"] < 0
                or type(record["tags"]) is not list
            ):
                problems = validate_event_dict(record) or ["seq must be an int >= 0"]
                self._reject(part, entry_id, fields, "; ".join(problems))
                continue
            seq = record["seq"]
            last = hwm.get(producer, 0)
            if seq <= last:
                self.duplicates += 1
                continue
            try:
                local_seq = publish(
                    record["kind"],
                    record["tick"],
                    record["day"],
                    polity_id=record["polity_id"],
                    ward_id=record["ward_id"],
                    actor_id=record["actor_id"],
                    subject_id=record["subject_id"],
                    payload=record["payload"],
                    tags=(*record["tags"], f"{PRODUCER_TAG}{producer}", f"{ORIGIN_SEQ_TAG}{seq}"),
                )
            except (TypeError, ValueError) as error:
                problems = validate_event_dict(record) or [f"{type(error).__name__}: {error}"]
                self._reject(part, entry_id, fields, "; ".join(problems))
                continue
            if seq != last + 1 and prev is None:
                self.gaps += 1  # no chain to tell: the sink selected kinds, or events are missing
            self._last_local_seq = local_seq
            hwm[producer] = seq
            self.published += 1
            published = True
        return published

    # -- committing ----------------------------------------------------
    def _dispatched(self) -> bool:
        if not self.bus.pending_count():
            return True
        first = self.bus.pending_events()[0]
        return bool(first.seq > self._last_local_seq)

    def commit(self) -> bool:
        """Acknowledge what the local bus has dispatched (runs after each drain).

        Returns whether everything read is now acknowledged. A Redis error is
        counted in ``failed``; the commit is tried again after the next drain.
        """
        parts = [part for part in self._parts.values() if part.to_ack]
        if not parts or not self._dispatched():
            return not parts
        if not self.cluster:
            return self._commit(parts)
        for part in parts:  # a cluster: one transaction per partition (one hash slot)
            self.committing = part.stream
            try:
                if not self._commit([part]):
                    return False
            finally:
                self.committing = None
        return True

    def slot_key(self, name: str) -> str:
        """``name`` in the hash slot of the partition being committed (for commit hooks).

        Against a Redis Cluster each commit is one transaction per partition,
        so every key a commit hook writes must be in that partition's slot:
        ``"<name>:{p<N>}"`` (``"<name>:{<stream>}"`` for a single stream).
        On a single server one transaction covers every partition and
        ``name`` is returned as it is.
        """
        if not self.cluster:
            return name
        if self.committing is None:
            raise RuntimeError("slot_key names a key of the commit in progress: call it in a hook")
        return f"{name}:{self._parts[self.committing].tag}"

    def _commit(self, parts: list[_Partition]) -> bool:
        """One transaction: the fence, the marks, the rejected entries, the acks, the hooks."""
        redis_module = _import_redis()
        pipe = self.client.pipeline(transaction=True)
        if self.shared:
            try:
                self._fence(pipe, parts)
            except redis_module.RedisError as error:
                pipe.reset()
                self._failure(error)
                return False
        changes = []
        for part in parts:
            changed = {
                producer: seq
                for producer, seq in sorted(part.hwm.items())
                if part.committed.get(producer) != seq
            }
            if changed:
                pipe.hset(part.state_key, mapping=changed)
            changes.append((part, changed))
        rejected = (
            [item for item in self._to_reject if item[0] in parts]
            if self.cluster
            else self._to_reject
        )
        for part, record in rejected:
            key = (
                f"{self.dead_letter_stream}:{part.tag}" if self.cluster else self.dead_letter_stream
            )
            pipe.xadd(key, record, maxlen=10_000, approximate=True)
        for part in parts:
            pipe.xack(part.stream, self.group, *part.to_ack)
        try:
            for hook in self._hooks:
                hook(pipe)
            pipe.execute()
        except redis_module.WatchError:
            pipe.reset()
            self._lose_leases(
                [p for p in parts if as_text(self.client.get(p.lease_key) or b"") != self.consumer]
            )
            return False
        except redis_module.RedisError as error:
            self._failure(error)
            return False
        finally:
            pipe.reset()
        for part, changed in changes:
            part.committed.update(changed)
            part.to_ack = []
            part.recovered = False
        done = {id(item) for item in rejected}
        self._to_reject = [item for item in self._to_reject if id(item) not in done]
        self.commits += 1
        self._recovering = False
        self._failing = False
        return True

    def _fence(self, pipe: Any, parts: list[_Partition]) -> None:
        """Make the commit apply only if no other consumer has owned the partitions since.

        Watches each partition's lease and high-water marks. The commit goes
        ahead while the lease is this consumer's, or has run out unclaimed
        (the marks stored are still the ones this consumer committed): then
        it is taken again in the same transaction. Otherwise the partition is
        lost (:class:`PartitionLost`).
        """
        pipe.watch(*[key for part in parts for key in (part.lease_key, part.state_key)])
        renew: list[_Partition] = []
        lost: list[_Partition] = []
        for part in parts:
            owner = pipe.get(part.lease_key)
            if owner is not None and as_text(owner) == self.consumer:
                renew.append(part)
                continue
            stored = {as_text(k): int(v) for k, v in pipe.hgetall(part.state_key).items()}
            if owner is None and stored == part.committed:
                renew.append(part)  # ran out, and no one read the partition since
                continue
            lost.append(part)
        if lost:
            pipe.reset()
            self._lose_leases(lost)
        pipe.multi()
        for part in renew:
            pipe.set(part.lease_key, self.consumer, px=self.lease_ms)

    def state(self) -> str:
        """``"ok"``, ``"backoff"`` (Redis calls fail; retried) or ``"recovering"``."""
        if self._failing:
            return "backoff"
        if self._recovering:
            return "recovering"
        return "ok"

    def status(self) -> dict[str, Any]:
        """The source's counters and state, JSON-ready."""
        return {
            "name": self.name,
            "state": self.state(),
            "published": self.published,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "redelivered": self.redelivered,
            "trimmed": self.trimmed,
            "gaps": self.gaps,
            "lost": self.lost,
            "loss_reports": self.loss_reports,
            "recoveries": self.recoveries,
            "commits": self.commits,
            "reads": self.reads,
            "failed": self.failed,
            "uncommitted": self.uncommitted,
            "streams": len(self._parts),
            "owned": len(self.owned_streams()),
            "acquired": self.acquired,
            "released": self.released,
            "leases_lost": self.leases_lost,
            "last_error": self.last_error,
            "last_loss": self.last_loss,
        }

    def close(self) -> None:
        """Stop committing on the bus's drains and close the client's connections.

        Unacknowledged entries stay pending: this consumer (or, after the
        leases run out, another one) reads them again.
        """
        with contextlib.suppress(ValueError):  # closed before
            self.bus.remove_drain_listener(self._listener)
        close_client(self.client)
