"""A bridge over Redis Streams: many sim processes, one consumer.

:class:`RedisStreamSink` is a transport: each drain's events go to a stream
in one pipeline (``XADD ... MAXLEN ~ N``), each entry carrying the event and
the producing bus's identity. :class:`RedisStreamSource` reads that stream
with a consumer group into a local bus, acknowledges after the local drain,
re-reads what a crashed consumer left unacknowledged, and never publishes
the same ``(producer, seq)`` twice.

Entry fields: ``producer`` (the producing bus's ``config.name``), ``seq``
(the event's seq on that bus) and ``event`` (its ``to_dict()`` as JSON).

Needs the ``redis`` extra: ``pip install 'ringbus[redis]'``.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._normalise import check_option_count
from ._base import RetryingTransport, Transform, validate_event_dict

if TYPE_CHECKING:
    import redis

__all__ = [
    "as_text",
    "ORIGIN_SEQ_TAG",
    "PRODUCER_TAG",
    "RedisStreamSink",
    "RedisStreamSource",
    "connect",
    "origin_of",
]

logger = logging.getLogger("ringbus.redis")

#: Tag prefixes a source adds to each event it publishes locally.
PRODUCER_TAG = "producer:"
ORIGIN_SEQ_TAG = "origin_seq:"

CommitHook = Callable[[Any], object]


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ringbus.transports.redis_streams needs redis-py: pip install 'ringbus[redis]'"
        ) from None
    return redis


def connect(url: str = "redis://127.0.0.1:6379/0", *, timeout: float = 1.0) -> redis.Redis:
    """A Redis client that fails fast: ``timeout`` seconds per call, no hidden retries.

    The bridge does its own retrying (backoff in ticks), so a server that is
    gone costs one short failed call per attempt instead of a stalled loop.
    """
    redis_module = _import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: redis.Redis = redis_module.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


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


class RedisStreamSink(RetryingTransport):
    """Append each drain's events to a Redis stream, in one pipeline.

    Entries are ``{"producer": <bus config name>, "seq": <seq>, "event":
    <to_dict() JSON>}``; the stream is kept near ``maxlen`` entries. When
    Redis cannot be reached the batch stays buffered (up to ``max_buffer``,
    then the oldest are dropped and counted), the state becomes
    ``"disconnected"`` with the error in ``last_error`` (and a warning is
    logged once per outage), and sending resumes, in order, once the server
    answers again — retried with backoff counted in ticks.

    Parameters
    ----------
    client
        A ``redis.Redis``; ``None`` connects to ``url`` with :func:`connect`.
    url
        Used when ``client`` is ``None``.
    stream
        The stream key.
    maxlen
        Bound on the stream's length (approximate trimming unless
        ``exact_maxlen``).
    batch_size
        Entries per pipeline round trip.
    retry_base_ticks, retry_max_ticks, clock
        Backoff after a failure, in ticks of ``clock`` (default: the bus's).
    transform, max_buffer, name
        See :class:`~ringbus.transports.Transport`.

    Examples
    --------
    A worker sends everything its bus drains::

        bus = EventBus(EventBusConfig(name="world-1"))
        RedisStreamSink(url="redis://127.0.0.1:6379/0", stream="world:events").attach(bus)
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        stream: str = "ringbus:events",
        maxlen: int = 100_000,
        exact_maxlen: bool = False,
        batch_size: int = 1_000,
        retry_base_ticks: int = 1,
        retry_max_ticks: int = 64,
        clock: Callable[[], int] | None = None,
        transform: Transform | None = None,
        max_buffer: int = 100_000,
        name: str | None = None,
    ) -> None:
        check_option_count("maxlen", maxlen)
        check_option_count("batch_size", batch_size)
        super().__init__(transform=transform, max_buffer=max_buffer, name=name or "redis")
        self.client: Any = client if client is not None else connect(url)
        self.stream = stream
        self.maxlen = maxlen
        self.exact_maxlen = bool(exact_maxlen)
        self.batch_size = batch_size
        self._start_backoff(clock, retry_base_ticks, retry_max_ticks)
        self.pipelines = 0
        self.last_sent_seq = 0
        self.outages = 0

    def state(self) -> str:
        return "disconnected" if self._backoff.failures else "ok"

    def _send(self, batch: list[tuple[int, str]]) -> int:
        redis_module = _import_redis()
        producer = self.producer
        done = 0
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            pipe = self.client.pipeline(transaction=True)
            for seq, text in chunk:
                pipe.xadd(
                    self.stream,
                    {"producer": producer, "seq": seq, "event": text},
                    maxlen=self.maxlen,
                    approximate=not self.exact_maxlen,
                )
            try:
                pipe.execute()
            except redis_module.RedisError as error:
                self.failed += 1
                self.last_error = f"{type(error).__name__}: {error}"
                if not self._backoff.failures:
                    self.outages += 1
                    logger.warning(
                        "%s: cannot append to stream %r (%s); buffering up to %d events",
                        self.name,
                        self.stream,
                        self.last_error,
                        self.max_buffer,
                    )
                self._backoff.failed()
                break
            finally:
                pipe.reset()
            if self._backoff.failures:
                logger.warning("%s: stream %r reachable again", self.name, self.stream)
            self._backoff.succeeded()
            self.pipelines += 1
            self.sent += len(chunk)
            self.last_sent_seq = chunk[-1][0]
            done += len(chunk)
        return done

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            stream=self.stream,
            pipelines=self.pipelines,
            outages=self.outages,
            last_sent_seq=self.last_sent_seq,
            retry_at=self._backoff.retry_at if self._backoff.failures else None,
        )
        return status


class RedisStreamSource:
    """Read a Redis stream with a consumer group into a local bus.

    Each entry's event is published on the local bus with its original
    fields (a new local seq) plus two tags, ``producer:<name>`` and
    ``origin_seq:<seq>`` (read them back with :func:`origin_of`). After the
    local drain that dispatched them, one Redis transaction acknowledges the
    entries (``XACK``), records the highest seq published per producer in the
    hash ``state_key``, and runs the commit hooks (see
    :meth:`add_commit_hook`), so what the consumer derived is stored with the
    acknowledgement or not at all.

    Restarted after a crash, the source first re-reads its own unacknowledged
    entries, then claims entries other consumers of the group left idle for
    ``claim_idle_ms``, then reads new ones; entries whose seq is at or below
    the producer's recorded high-water mark are acknowledged without being
    published, so no ``(producer, seq)`` is published twice and each
    producer's order is kept. Producer names must therefore be unique: a
    producer that starts again from seq 1 needs a new name (or a bus
    restored from a snapshot, which continues the seqs).

    Entries that are not valid events are acknowledged, counted in
    ``invalid`` and copied to the stream ``dead_letter_stream``. Pending
    entries that the stream's length bound trimmed away before they were read
    are counted in ``trimmed``; a producer's seq jumping by more than one is
    counted in ``gaps`` (its sink may select kinds, or may have dropped
    events — its own ``dropped`` counter tells).

    Parameters
    ----------
    bus
        The local bus to publish into.
    client
        A ``redis.Redis``; ``None`` connects to ``url`` with :func:`connect`.
    url
        Used when ``client`` is ``None``.
    stream, group, consumer
        The stream, the consumer group (created when missing) and this
        consumer's name (keep it across restarts).
    count
        Largest number of entries read per :meth:`poll`.
    claim_idle_ms
        How long another consumer's entry must have been idle to be claimed.
    state_key
        Hash of high-water marks (default ``"<stream>:<group>:hwm"``).
    dead_letter_stream
        Where invalid entries go (default ``"<stream>:rejected"``).
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
        count: int = 1_000,
        claim_idle_ms: int = 30_000,
        state_key: str | None = None,
        dead_letter_stream: str | None = None,
    ) -> None:
        check_option_count("count", count)
        if getattr(bus, "clock_policy", "free") != "free":
            raise ValueError(
                "a RedisSource republishes events with their producers' own ticks and days, "
                "which interleave: give its bus EventBusConfig(clock_policy='free')"
            )
        self.bus = bus
        self.client: Any = client if client is not None else connect(url)
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.name = f"redis-source:{consumer}"
        self.count = count
        self.claim_idle_ms = claim_idle_ms
        self.state_key = state_key or f"{stream}:{group}:hwm"
        self.dead_letter_stream = dead_letter_stream or f"{stream}:rejected"
        self._hooks: list[CommitHook] = []
        self._hwm: dict[str, int] = {}
        self._committed_hwm: dict[str, int] = {}
        self._to_ack: list[bytes | str] = []
        self._to_reject: list[dict[str, str]] = []
        self._last_local_seq = 0
        self._phase = "own"  # own pending -> claim from others -> new entries
        self._claim_cursor: str = "0-0"
        self._started = False
        self.published = 0
        self.duplicates = 0
        self.invalid = 0
        self.redelivered = 0
        self.trimmed = 0
        self.gaps = 0
        self.commits = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_invalid: deque[str] = deque(maxlen=20)
        bus.add_drain_listener(self.commit)

    # -- setup ---------------------------------------------------------
    def start(self) -> None:
        """Create the group if missing and load the high-water marks (done by :meth:`poll`)."""
        redis_module = _import_redis()
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis_module.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        stored = self.client.hgetall(self.state_key)
        self._hwm = {as_text(key): int(value) for key, value in stored.items()}
        self._committed_hwm = dict(self._hwm)
        self._started = True

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Run ``hook(pipeline)`` inside each commit transaction.

        Queue writes on the redis-py pipeline (e.g. the aggregate state the
        local subscribers derived); they are applied atomically with the
        acknowledgements and the high-water marks.
        """
        if not callable(hook):
            raise TypeError("a commit hook must be callable and take the pipeline")
        self._hooks.append(hook)

    def high_water_marks(self) -> dict[str, int]:
        """The highest seq published per producer (committed or about to be)."""
        return dict(sorted(self._hwm.items()))

    @property
    def uncommitted(self) -> int:
        """Entries read but not yet acknowledged."""
        return len(self._to_ack)

    # -- reading -------------------------------------------------------
    def _read(self) -> list[tuple[Any, Any]]:
        count = self.count
        if self._phase == "own":
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.stream: "0"}, count=count
            )
            entries = reply[0][1] if reply else []
            if entries:
                self.redelivered += len(entries)
                return list(entries)
            self._phase = "claim"
        while self._phase == "claim":  # one pass over the group's pending entries
            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=self._claim_cursor,
                count=count,
            )
            cursor, claimed = as_text(reply[0]), reply[1]
            if len(reply) > 2 and reply[2]:
                # Redis >= 7 drops pending entries that trimming deleted: count them.
                self.trimmed += len(reply[2])
                self.last_invalid.append(
                    f"{len(reply[2])} pending entries were trimmed from the stream before "
                    "they were read"
                )
            self._claim_cursor = cursor
            if cursor == "0-0":
                self._phase = "new"
            if claimed:
                self.redelivered += len(claimed)
                return list(claimed)
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count)
        return list(reply[0][1]) if reply else []

    def poll(self) -> int:
        """Read up to ``count`` entries and publish their events on the local bus.

        Nothing new is read while entries from the last poll are still
        unacknowledged (call the bus's ``drain()``, which commits). Returns
        how many entries were read — published, or skipped as duplicates or
        invalid (see the counters); 0 means nothing is waiting now. A Redis
        error is counted in ``failed`` (``last_error`` says which) and
        returns 0.
        """
        redis_module = _import_redis()
        if self._to_ack:
            self.commit()
            if self._to_ack:
                return 0
        try:
            if not self._started:
                self.start()
            entries = self._read()
        except redis_module.RedisError as error:
            self.failed += 1
            self.last_error = f"{type(error).__name__}: {error}"
            return 0
        published = 0
        try:
            for entry_id, fields in entries:
                if published_seq := self._publish(entry_id, fields):
                    published += 1
                    self._last_local_seq = published_seq
                self._to_ack.append(entry_id)
        except BaseException:
            # e.g. the local bus's pending queue is full: the entries not
            # handled stay unacknowledged; read them again from this
            # consumer's pending list (the published ones are skipped then).
            self._phase = "own"
            raise
        if entries and not published:
            self.commit()
        return len(entries)

    def _reject(self, entry_id: Any, fields: Any, problem: str, *, invalid: bool = True) -> None:
        self.invalid += invalid
        self.last_invalid.append(f"{as_text(entry_id)}: {problem}")
        record = {"entry_id": as_text(entry_id), "problem": problem}
        for key, value in (fields or {}).items():
            record[f"field:{as_text(key)}"] = as_text(value)
        self._to_reject.append(record)

    def _publish(self, entry_id: Any, fields: Any) -> int:
        if not fields:  # trimmed away while pending
            self.trimmed += 1
            problem = "entry was trimmed from the stream before it was read"
            self._reject(entry_id, fields, problem, invalid=False)
            return 0
        data = {as_text(key): value for key, value in fields.items()}
        try:
            producer = as_text(data["producer"])
            seq = int(as_text(data["seq"]))
            record = json.loads(as_text(data["event"]))
        except (KeyError, ValueError) as error:
            self._reject(entry_id, fields, f"not a ringbus entry: {type(error).__name__}: {error}")
            return 0
        last = self._hwm.get(producer, 0)
        if seq <= last:
            self.duplicates += 1
            return 0
        problems = validate_event_dict(record)
        if problems:
            self._reject(entry_id, fields, "; ".join(problems))
            return 0
        if seq != last + 1:
            self.gaps += 1  # the sink selected kinds or dropped, or the stream was trimmed
        local_seq: int = self.bus.publish(
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
        self._hwm[producer] = seq
        self.published += 1
        return local_seq

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
        if not self._to_ack or not self._dispatched():
            return not self._to_ack
        redis_module = _import_redis()
        pipe = self.client.pipeline(transaction=True)
        changed = {
            producer: seq
            for producer, seq in sorted(self._hwm.items())
            if self._committed_hwm.get(producer) != seq
        }
        if changed:
            pipe.hset(self.state_key, mapping=changed)
        for record in self._to_reject:
            pipe.xadd(self.dead_letter_stream, record, maxlen=10_000, approximate=True)
        pipe.xack(self.stream, self.group, *self._to_ack)
        try:
            for hook in self._hooks:
                hook(pipe)
            pipe.execute()
        except redis_module.RedisError as error:
            self.failed += 1
            self.last_error = f"{type(error).__name__}: {error}"
            return False
        finally:
            pipe.reset()
        self._committed_hwm.update(changed)
        self._to_ack = []
        self._to_reject = []
        self.commits += 1
        return True

    def status(self) -> dict[str, Any]:
        """The source's counters and state, JSON-ready."""
        return {
            "name": self.name,
            "state": "failing" if self.last_error and self._to_ack else "ok",
            "published": self.published,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "redelivered": self.redelivered,
            "trimmed": self.trimmed,
            "gaps": self.gaps,
            "commits": self.commits,
            "failed": self.failed,
            "uncommitted": len(self._to_ack),
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Stop committing on the bus's drains (unacknowledged entries stay pending)."""
        self.bus.remove_drain_listener(self.commit)
