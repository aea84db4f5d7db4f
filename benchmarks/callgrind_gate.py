"""Regression gate on instruction counts, measured with valgrind's callgrind.

Usage (cwd at the repo root, ringbus installed in the running environment)::

    python benchmarks/callgrind_gate.py            # compare with the baseline
    python benchmarks/callgrind_gate.py --update   # record a gain (commit it)
    python benchmarks/callgrind_gate.py --update --reason "why it costs more"

Instruction counts do not depend on machine load, so unlike timings they can
be compared with a committed baseline. The workload is the benchmark one
(``ringbus._bench``), run under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0`` and the cyclic GC off, once with ``--ticks`` ticks and once with none (the same
script, set up and warmed up, doing nothing), so the difference divided by
the events is the cost per operation:

publish   instructions per published event, no subscribers (S1, drains included)
deliver   instructions per delivery: one subscriber to all kinds (S2) minus S1
s3_event  instructions per published event of S3 (ten subscribers, 2 kinds each)

The gate fails when any count is more than ``--tolerance`` (10 %) above
its entry in ``callgrind_baseline.json`` for this interpreter build (full
version) and core, and also when one is more than 10 % below it: a gain
must be recorded, or the freed margin would let a later regression pass.
``--update`` records the figures; it refuses growth beyond the tolerance
unless ``--reason TEXT`` says why, and keeps the reason with the old and new
figures in the entry's history. Updating the baseline is a deliberate commit.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "callgrind_baseline.json"
WARMUP_TICKS = 3
ABOUT = (
    "Instructions per operation counted by benchmarks/callgrind_gate.py (valgrind "
    "callgrind, PYTHONHASHSEED=0), one entry per interpreter build and core. CI fails "
    "when a figure is more than 10% above or below its entry. Record with --update; "
    "growth needs --reason, kept in the entry's history with the old and new figures."
)


def child(scenario: str, ticks: int, core_name: str) -> None:
    """The measured script: set up ``scenario``, warm up, run ``ticks`` ticks."""
    from ringbus._bench import check_deliveries, make_runner

    implementation = "ringbus" if core_name == "cython" else "ringbus pure"
    runner = make_runner(implementation, scenario)
    # The cyclic GC runs at allocation-count thresholds, so its (large, rare)
    # passes would land differently in each script; keep it out of the counts.
    gc.collect()
    gc.disable()
    runner.run(WARMUP_TICKS)
    if ticks:
        runner.run(ticks)
    check_deliveries(runner, WARMUP_TICKS + ticks)


def count_instructions(scenario: str, ticks: int, core_name: str, workdir: Path) -> int:
    out = workdir / f"callgrind.{scenario}.{ticks}.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        scenario,
        str(ticks),
        core_name,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(
            f"callgrind_gate: the measured script failed ({scenario}, {ticks} ticks):\n"
            + result.stderr[-3000:]
        )
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if match:
            return int(match.group(1))
    sys.exit(f"callgrind_gate: no instruction total in {out}")


def measure(core_name: str, ticks: int) -> dict[str, float]:
    from ringbus._bench import SCENARIOS, expected_deliveries, make_batch

    per_event: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ringbus-callgrind-") as tmp:
        for scenario in ("S1", "S2", "S3"):
            idle = count_instructions(scenario, 0, core_name, Path(tmp))
            busy = count_instructions(scenario, ticks, core_name, Path(tmp))
            per_event[scenario] = (busy - idle) / (ticks * SCENARIOS[scenario].events_per_tick)
    s2 = SCENARIOS["S2"]
    deliveries_per_event = expected_deliveries(s2, make_batch(s2.events_per_tick), 1) / 100
    return {
        "publish": round(per_event["S1"], 1),
        "deliver": round((per_event["S2"] - per_event["S1"]) / deliveries_per_event, 1),
        "s3_event": round(per_event["S3"], 1),
    }


def environment_key(core_name: str) -> str:
    """Baseline key: interpreter and its full version, and the core."""
    return f"{platform.python_implementation().lower()}-{platform.python_version()}-{core_name}"


OPERATIONS = ("publish", "deliver", "s3_event")


class RatchetRefused(Exception):
    """An update would record growth without saying why."""


@dataclass(frozen=True)
class Row:
    """One operation compared with its baseline."""

    operation: str
    before: float
    now: float
    status: str  # "ok", "grew" (a regression) or "fell" (re-record to lock it in)

    @property
    def change(self) -> float:
        return (self.now - self.before) / self.before


def compare(base: dict[str, Any], current: dict[str, float], tolerance: float) -> list[Row]:
    """Each operation against the baseline: beyond ``tolerance`` either way is not ok.

    Growth is a regression. A fall of more than ``tolerance`` is a gain that
    must be recorded, or the freed margin would let a later regression pass.
    """
    rows = []
    for operation in OPERATIONS:
        before, now = float(base[operation]), float(current[operation])
        change = (now - before) / before
        status = "grew" if change > tolerance else "fell" if change < -tolerance else "ok"
        rows.append(Row(operation, before, now, status))
    return rows


def updated_entry(
    old: dict[str, Any] | None,
    current: dict[str, float],
    *,
    reason: str | None,
    tolerance: float,
    context: dict[str, Any],
) -> dict[str, Any]:
    """The baseline entry after recording ``current``.

    Growth beyond ``tolerance`` over ``old`` is refused unless ``reason``
    says why; the reason is kept in the entry's history with the old and
    new figures, so a re-recorded regression leaves a trace.
    """
    history = list(old.get("history", [])) if old else []
    if old is not None:
        grew = [row for row in compare(old, current, tolerance) if row.status == "grew"]
        if grew and not (reason and reason.strip()):
            raise RatchetRefused(
                "refusing to record growth over the baseline: "
                + ", ".join(
                    f"{r.operation} {r.before:,.0f} -> {r.now:,.0f} ({r.change:+.1%})" for r in grew
                )
                + "; if the cost is intended, say why with --reason TEXT"
            )
        history.append(
            {
                "reason": (reason or "").strip() or None,
                "old": {op: old[op] for op in OPERATIONS},
                "new": {op: current[op] for op in OPERATIONS},
            }
        )
    return {**{op: current[op] for op in OPERATIONS}, **context, "history": history}


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--child"]:
        child(args_list[1], int(args_list[2]), args_list[3])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write the baseline for this core")
    parser.add_argument(
        "--reason", default=None, help="why a figure grew (required to record growth)"
    )
    parser.add_argument("--core", choices=("cython", "python"), default=None)
    parser.add_argument("--ticks", type=int, default=50, help="ticks of 100 events measured")
    parser.add_argument(
        "--tolerance", type=float, default=0.10, help="allowed change either way (0.10)"
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    args = parser.parse_args(args_list)
    if shutil.which("valgrind") is None:
        print("callgrind_gate: FAIL: valgrind is not installed (apt-get install valgrind)")
        return 2
    import ringbus

    core_name = args.core or ringbus.BACKEND
    if core_name == "cython" and ringbus.BACKEND != "cython":
        print("callgrind_gate: FAIL: the compiled core is not active in this environment")
        return 2
    key = environment_key(core_name)
    current = measure(core_name, args.ticks)
    data = (
        json.loads(args.baseline.read_text(encoding="utf-8"))
        if args.baseline.exists()
        else {"about": "", "baselines": {}}
    )
    base = data["baselines"].get(key)
    if args.update:
        try:
            entry = updated_entry(
                base,
                current,
                reason=args.reason,
                tolerance=args.tolerance,
                context={"ticks": args.ticks, "ringbus": ringbus.__version__},
            )
        except RatchetRefused as error:
            print(f"callgrind_gate: {error}")
            return 1
        data["about"] = ABOUT
        data["baselines"][key] = entry
        args.baseline.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
        print(f"callgrind_gate: baseline for {key} written to {args.baseline}: {current}")
        return 0
    if base is None:
        print(
            f"callgrind_gate: FAIL: {args.baseline} has no baseline for {key} (the figures "
            "are per interpreter build); record one with --update and commit it"
        )
        print(f"measured: {current}")
        return 1
    rows = compare(base, current, args.tolerance)
    print(f"callgrind_gate: {key}, instructions per operation")
    print(f"  {'operation':<10} {'baseline':>10} {'now':>10} {'change':>8}")
    for row in rows:
        flag = {"ok": "", "grew": "  FAIL: grew", "fell": "  FAIL: fell, re-record"}[row.status]
        figures = f"{row.before:>10,.0f} {row.now:>10,.0f} {row.change:>+7.1%}"
        print(f"  {row.operation:<10} {figures}{flag}")
    grew = [row.operation for row in rows if row.status == "grew"]
    fell = [row.operation for row in rows if row.status == "fell"]
    if grew:
        print(
            f"callgrind_gate: FAIL: {', '.join(grew)} grew more than {args.tolerance:.0%}; "
            "if intended, record it with --update --reason TEXT and commit the baseline"
        )
    if fell:
        print(
            f"callgrind_gate: FAIL: {', '.join(fell)} fell more than {args.tolerance:.0%} "
            "below the baseline; record the gain with --update and commit it, so the "
            "freed margin cannot hide a later regression"
        )
    if grew or fell:
        return 1
    print("callgrind_gate: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
