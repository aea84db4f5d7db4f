"""The performance targets of ringbus: one definition each.

``benchmarks/targets.py`` (the blocking gate CI runs) measures and judges
exactly these; the README's target table is :func:`markdown_table` (a test
checks the two agree). Adding a target is adding one :class:`Target` below;
a new kind of measurement also needs its function in ``targets.py``
(``MEASUREMENTS``).

Every timed figure is a ratio of medians of samples taken interleaved in one
run, so machine load hits both sides alike. A check that misses is measured
again with ``RETRY_FACTOR`` times its rounds, and judged on all its rounds
together (the median of every round's figure): one lucky re-run cannot
outvote the first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A miss is re-measured with this many times its rounds before it fails.
RETRY_FACTOR = 3


@dataclass(frozen=True)
class Target:
    """One promise of the README, as the gate checks it.

    Parameters
    ----------
    key
        Short name, for ``targets.py --only`` and the gate's messages.
    title
        What is compared, as the README says it (markdown).
    measurement
        Name of the measuring function in ``targets.py``.
    args
        Arguments of that function (e.g. the two implementations of a ratio).
    cases
        Scenarios checked one by one (``("",)``: one check).
    limit
        The promise: the figure must be at most (``at_most``) or at least this.
    at_most
        Whether the figure must stay at or below ``limit`` (else at or above).
    unit
        ``""`` a plain ratio, ``"x"`` a speed-up, ``"%"`` a relative
        difference (figure 0.1 is 10 %), ``"bytes"``.
    rounds, samples
        Interleaved rounds, and samples of each side per round; a round's
        figure comes from the medians of its samples, the check's figure is
        the median of the rounds' figures.
    apart
        The figure is a signed relative difference (each round's, so noise
        cancels out in the median) and the promise bounds its size.
    """

    key: str
    title: str
    measurement: str
    args: tuple[str, ...]
    cases: tuple[str, ...]
    limit: float
    at_most: bool
    unit: str
    rounds: int
    samples: int
    apart: bool = False

    def judged(self, figure: float) -> float:
        """What the promise bounds: the figure, or its size for an ``apart`` target."""
        return abs(figure) if self.apart else figure

    def met(self, figure: float) -> bool:
        """Whether ``figure`` keeps the promise."""
        value = self.judged(figure)
        return value <= self.limit if self.at_most else value >= self.limit

    def format(self, figure: float) -> str:
        """``figure`` in the target's unit, as the gate prints it."""
        if self.unit == "x":
            return f"{figure:.1f}x"
        if self.unit == "%":
            return f"{figure * 100:+.1f} %" if self.apart else f"{figure * 100:.1f} %"
        if self.unit == "bytes":
            return f"{figure:,.0f} bytes"
        return f"{figure:.2f}"

    def promise(self) -> str:
        """The promise as the README states it, e.g. ``≤ 0.8`` or ``≥ 10x``."""
        sign = "≤" if self.at_most else "≥"
        if self.unit == "x":
            number = f"{self.limit:g}x"
        elif self.unit == "%":
            number = f"{self.limit * 100:g} %"
        elif self.unit == "bytes":
            number = f"{self.limit:,.0f} bytes"
        else:
            number = f"{self.limit:g}"
        return f"{sign} {number}" + (" apart" if self.apart else "")

    def sampling(self) -> str:
        """How it is sampled, for the README."""
        if self.rounds == 1 and self.samples == 1:
            return f"1 run (deterministic); a miss: {RETRY_FACTOR} more"
        return (
            f"{self.rounds} rounds x {self.samples} of each, interleaved; "
            f"a miss: {RETRY_FACTOR * self.rounds} more rounds"
        )


SPEED_SCENARIOS = ("S2", "S3", "S4")

#: Every target, in README order.
TARGETS: tuple[Target, ...] = (
    Target(
        key="psygnal",
        title="ringbus / psygnal `emit_fast`, ns per event",
        measurement="ratio",
        args=("ringbus", "psygnal emit_fast"),
        cases=SPEED_SCENARIOS,
        limit=0.8,
        at_most=True,
        unit="",
        rounds=31,
        samples=5,
    ),
    Target(
        key="compiled",
        title="compiled core over the pure twin (pure ns / compiled ns)",
        measurement="ratio",
        args=("ringbus pure", "ringbus"),
        cases=("S1", *SPEED_SCENARIOS),
        limit=10.0,
        at_most=False,
        unit="x",
        rounds=15,
        samples=3,
    ),
    Target(
        key="floor",
        title="ringbus / minimal compiled floor, ns per event",
        measurement="ratio",
        args=("ringbus", "floor"),
        cases=SPEED_SCENARIOS,
        limit=1.6,
        at_most=True,
        unit="",
        rounds=31,
        samples=5,
    ),
    Target(
        key="disabled",
        title="`enabled=False` publish / an empty Python function, net of the loop "
        "(one of `publish`'s signature; the smallest `def f(kind, payload=None)`)",
        measurement="disabled_publish",
        args=(),
        cases=("same-signature", "minimal-def"),
        limit=1.5,
        at_most=True,
        unit="",
        rounds=21,
        samples=9,
    ),
    Target(
        key="ring",
        title="full 1,000,000- vs 1,000-slot ring (S1)",
        measurement="ring_sizes",
        args=(),
        cases=("",),
        limit=0.20,
        at_most=True,
        unit="%",
        rounds=31,
        samples=5,
        apart=True,
    ),
    Target(
        key="idle",
        title="S3 with 100 subscribers to kinds that never occur vs S3",
        measurement="idle_subscribers",
        args=(),
        cases=("",),
        limit=0.10,
        at_most=True,
        unit="%",
        rounds=31,
        samples=7,
        apart=True,
    ),
    Target(
        key="journal",
        title='S2 with a journal attached (`fsync="never"`) / S2 without, ns per event',
        measurement="journal",
        args=("journal",),
        cases=("",),
        limit=4.0,
        at_most=True,
        unit="",
        rounds=21,
        samples=5,
    ),
    Target(
        key="journal-cost",
        title="a journal's cost per event (journaled S2 - S2) / a plain stdlib loop "
        "(`json.dumps(record, sort_keys=True)` + SHA-256 + buffered write per event)",
        measurement="journal",
        args=("journal-cost",),
        cases=("",),
        limit=0.5,
        at_most=True,
        unit="",
        rounds=11,
        samples=3,
    ),
    Target(
        key="verify",
        title="`verify_journal` reading speed over that plain loop's writing speed",
        measurement="journal",
        args=("verify",),
        cases=("",),
        limit=2.0,
        at_most=False,
        unit="x",
        rounds=11,
        samples=3,
    ),
    Target(
        key="redis-sink",
        title="S2 with a `RedisStreamSink` attached / S2 alone, the loop's thread "
        "(a real redis-server; every event checked in the stream)",
        measurement="redis_sink",
        args=(),
        cases=("S2",),
        limit=4.0,
        at_most=True,
        unit="",
        rounds=9,
        samples=3,
    ),
    Target(
        key="producer",
        title="`producer.publish` from one thread (then `drain`) / plain `publish`, "
        "ns per event (S1)",
        measurement="producer_publish",
        args=(),
        cases=("",),
        limit=2.0,
        at_most=True,
        unit="",
        rounds=21,
        samples=5,
    ),
    Target(
        key="threads",
        title="events/s from 4 producer threads / from 1 producer thread (process CPU time)",
        measurement="producer_threads",
        args=(),
        cases=("",),
        limit=0.8,
        at_most=False,
        unit="",
        rounds=15,
        samples=3,
    ),
    Target(
        key="stream",
        title="`async for` over `bus.stream()` / a sync subscriber, ns per event (S2)",
        measurement="stream_reader",
        args=(),
        cases=("",),
        limit=3.0,
        at_most=True,
        unit="",
        rounds=21,
        samples=5,
    ),
    Target(
        key="drain_async",
        title="`drain_async` / `drain` with only sync handlers, ns per event (S2)",
        measurement="drain_async",
        args=(),
        cases=("",),
        limit=1.2,
        at_most=True,
        unit="",
        rounds=21,
        samples=5,
    ),
    Target(
        key="memory",
        title="bytes per retained event (full 50,000-slot ring, tracemalloc)",
        measurement="bytes_per_event",
        args=(),
        cases=("",),
        limit=300,
        at_most=True,
        unit="bytes",
        rounds=1,
        samples=1,
    ),
    Target(
        key="growth",
        title="memory growth over 200,000 more events (beyond the full ring)",
        measurement="memory_growth",
        args=(),
        cases=("",),
        limit=64 * 1024,
        at_most=True,
        unit="bytes",
        rounds=1,
        samples=1,
    ),
)

GATE = "benchmarks/targets.py"


def target(key: str) -> Target:
    """The target named ``key``."""
    for candidate in TARGETS:
        if candidate.key == key:
            return candidate
    raise KeyError(f"no target {key!r}: use one of {', '.join(t.key for t in TARGETS)}")


def markdown_table() -> str:
    """The README's target table: target, promise, gate, cases, samples."""
    lines = [
        "| target | promise | gate | cases | samples |",
        "|---|---|---|---|---|",
    ]
    for t in TARGETS:
        cases = ", ".join(t.cases) if t.cases != ("",) else "one"
        gate = f"`{GATE} --only {t.key}`"
        lines.append(f"| {t.title} | {t.promise()} | {gate} | {cases} | {t.sampling()} |")
    return "\n".join(lines)
