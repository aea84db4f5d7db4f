"""Regression gate on instruction counts, measured with valgrind's callgrind.

Usage (cwd at the repo root, ringbus installed in the running environment)::

    python benchmarks/callgrind_gate.py            # compare with the baseline
    python benchmarks/callgrind_gate.py --update   # rewrite the baseline (commit it)

Instruction counts do not depend on machine load, so unlike timings they can
be compared with a committed baseline. The workload is the benchmark one
(``ringbus._bench``), run under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0`` and the cyclic GC off, once with ``--ticks`` ticks and once with none (the same
script, set up and warmed up, doing nothing), so the difference divided by
the events is the cost per operation:

publish   instructions per published event, no subscribers (S1, drains included)
deliver   instructions per delivery: one subscriber to all kinds (S2) minus S1
s3_event  instructions per published event of S3 (ten subscribers, 2 kinds each)

The gate fails when any count grows more than ``--tolerance`` (10 %) over
``callgrind_baseline.json`` for this interpreter and core. Updating the
baseline is a deliberate commit.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "callgrind_baseline.json"
WARMUP_TICKS = 3


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
    major, minor = sys.version_info[:2]
    return f"{platform.python_implementation().lower()}-{major}.{minor}-{core_name}"


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--child"]:
        child(args_list[1], int(args_list[2]), args_list[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write the baseline for this core")
    parser.add_argument("--core", choices=("cython", "python"), default=None)
    parser.add_argument("--ticks", type=int, default=50, help="ticks of 100 events measured")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed growth (0.10)")
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
    if args.update:
        data["about"] = (
            "Instructions per operation counted by benchmarks/callgrind_gate.py "
            "(valgrind callgrind, PYTHONHASHSEED=0). Update with --update, deliberately."
        )
        data["baselines"][key] = {**current, "ticks": args.ticks, "ringbus": ringbus.__version__}
        args.baseline.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
        print(f"callgrind_gate: baseline for {key} written to {args.baseline}: {current}")
        return 0
    base = data["baselines"].get(key)
    if base is None:
        print(
            f"callgrind_gate: FAIL: {args.baseline} has no baseline for {key}; "
            "run with --update and commit it"
        )
        print(f"measured: {current}")
        return 1
    failed = []
    print(f"callgrind_gate: {key}, instructions per operation")
    print(f"  {'operation':<10} {'baseline':>10} {'now':>10} {'change':>8}")
    for name, now in current.items():
        before = float(base[name])
        change = (now - before) / before
        flag = "" if change <= args.tolerance else "  FAIL"
        if flag:
            failed.append(name)
        print(f"  {name:<10} {before:>10,.0f} {now:>10,.0f} {change:>+7.1%}{flag}")
    if failed:
        print(
            f"callgrind_gate: FAIL: {', '.join(failed)} grew more than {args.tolerance:.0%}; "
            "if intended, run with --update and commit the baseline"
        )
        return 1
    print("callgrind_gate: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
