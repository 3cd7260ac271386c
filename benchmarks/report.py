"""Turning figures into the issue's target checks, a markdown table and a JSON document.

Owns the targets of issue 7 (each a ratio to the calibration baseline of the same run, or an
absolute bound), their pass/fail evaluation, the machine description and the two renderings.
Standard library only.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.loadgen import Figures

MiB = 1024 * 1024


@dataclass
class Check:
    target: str
    required: str
    measured: str
    passed: bool


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _find(results: Sequence[Figures], prefix: str) -> Figures | None:
    return next((r for r in results if r.name.startswith(prefix)), None)


def _ok(value: float) -> bool:
    return value is not None and not math.isnan(value)


def cpu_ratio(baseline: Figures | None, result: Figures) -> float:
    """Capacity ratio from CPU time: baseline CPU per request over emulator CPU per operation
    (x 3 for jobs, which are three requests). Unlike throughput ratios it does not move when
    another process steals the server core, because only the server's own CPU time counts."""
    if baseline is None or not _ok(baseline.server_cpu_ms_per_op):
        return math.nan
    if not _ok(result.server_cpu_ms_per_op) or result.server_cpu_ms_per_op <= 0:
        return math.nan
    per_op = 3 if result.unit == "jobs/s" else 1
    return per_op * baseline.server_cpu_ms_per_op / result.server_cpu_ms_per_op


def evaluate(baseline: Figures | None, results: Sequence[Figures]) -> list[Check]:
    checks: list[Check] = []
    base = baseline.throughput if baseline else math.nan

    s1 = _find(results, "1. sync execute HTTP/1.1 R=8 C=64")
    if s1 and _ok(base):
        need = 0.30 * base / 3
        checks.append(
            Check(
                "1. jobs/s at (8, 64) >= 0.30 x baseline/3",
                f">= {need:,.0f} jobs/s",
                f"{s1.throughput:,.0f} jobs/s ({s1.throughput / (base / 3):.2f} x baseline/3)",
                s1.throughput >= need,
            )
        )
        ratio = cpu_ratio(baseline, s1)
        checks.append(
            Check(
                "1. same, CPU-normalized (baseline CPU/request x 3 / emulator CPU/job)",
                ">= 0.30",
                f"{ratio:.2f}",
                _ok(ratio) and ratio >= 0.30,
            )
        )
    for label in ("R=8 C=64", "R=32 C=512"):
        r = _find(results, f"1. sync execute HTTP/1.1 {label}")
        if r and _ok(r.p50_ms):
            checks.append(
                Check(
                    f"1. p99 <= 2 x p50 at {label}",
                    f"<= {2 * r.p50_ms:.1f} ms",
                    f"p99 {r.p99_ms:.1f} ms, p50 {r.p50_ms:.1f} ms ({r.p99_ms / r.p50_ms:.2f} x)",
                    r.p99_ms <= 2 * r.p50_ms,
                )
            )
    s2 = _find(results, "2. sync execute h2c R=8 C=64")
    if s1 and s2:
        checks.append(
            Check(
                "2. h2c jobs/s >= 0.7 x scenario 1 at (8, 64)",
                f">= {0.7 * s1.throughput:,.0f} jobs/s",
                f"{s2.throughput:,.0f} jobs/s ({s2.throughput / s1.throughput:.2f} x)",
                s2.throughput >= 0.7 * s1.throughput,
            )
        )
    s4 = _find(results, "4.")
    if s4:
        waiting = s4.extra.get("waiting", 0)
        checks.append(
            Check(
                "4. all waiting executes complete with the right bodies",
                f"{waiting:,} answered, 0 errors",
                f"{s4.ops:,} answered, {s4.errors} errors",
                s4.ops == waiting and s4.errors == 0,
            )
        )
        per_caller = s4.extra.get("KiB per waiting caller (connection + execute)", math.nan)
        per_execute = s4.extra.get("KiB per waiting execute (beyond its connection)", math.nan)
        checks.append(
            Check(
                "4. memory growth per waiting caller <= 40 KiB",
                "<= 40 KiB",
                f"{per_caller} KiB with its connection, {per_execute} KiB beyond it",
                _ok(per_caller) and per_caller <= 40,
            )
        )
        release = s4.extra.get("release seconds", math.nan)
        checks.append(
            Check(
                "4. release of all waiting executes <= 5 s",
                "<= 5 s",
                f"{release} s",
                _ok(release) and release <= 5,
            )
        )
    s5 = _find(results, "5.")
    if s5:
        growth = s5.extra.get("peak RSS growth MiB", math.nan)
        checks.append(
            Check("5. peak RSS growth <= 64 MiB", "<= 64 MiB", f"{growth} MiB", growth <= 64)
        )
        checks.append(
            Check(
                "5. stream >= 150 MiB/s",
                ">= 150 MiB/s",
                f"{s5.throughput:,.0f} MiB/s",
                _ok(s5.throughput) and s5.throughput >= 150,
            )
        )
        checks.append(
            Check(
                "5. p99 chunk delay < 5 ms",
                "< 5 ms",
                f"{s5.p99_ms:.2f} ms (paced); at full speed "
                f"{s5.extra.get('chunk delay at full speed p50/p99/max ms')}",
                _ok(s5.p99_ms) and s5.p99_ms < 5,
            )
        )
    s6 = _find(results, "6.")
    if s6:
        checks.append(
            Check(
                "6. idle emulator CPU <= 2 % of one core",
                "<= 2 %",
                f"{s6.server_cpu_percent:.2f} %",
                _ok(s6.server_cpu_percent) and s6.server_cpu_percent <= 2,
            )
        )
    steady = s6.extra.get("steady-state CPU % (one wave per poll timeout)") if s6 else None
    if s6 and steady is not None:
        checks.append(
            Check(
                "6. (stricter, not in the issue) steady state incl. re-polls every poll timeout",
                "<= 2 %",
                f"{steady} % ({s6.extra.get('emulator CPU ms per re-poll')} ms per re-poll)",
                _ok(steady) and steady <= 2,
            )
        )
    for prefix, label in (("7. token", "token"), ("7. getCurrent", "getCurrent")):
        r = _find(results, prefix)
        if r and _ok(base):
            checks.append(
                Check(
                    f"7. {label} >= 0.25 x baseline",
                    f">= {0.25 * base:,.0f} req/s",
                    f"{r.throughput:,.0f} req/s ({r.throughput / base:.2f} x)",
                    r.throughput >= 0.25 * base,
                )
            )
            ratio = cpu_ratio(baseline, r)
            checks.append(
                Check(
                    f"7. {label}, CPU-normalized (baseline CPU/request / emulator CPU/request)",
                    ">= 0.25",
                    f"{ratio:.2f}",
                    _ok(ratio) and ratio >= 0.25,
                )
            )
    return checks


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def markdown(
    baseline: Figures | None, results: Sequence[Figures], checks: Sequence[Check], quick: bool
) -> str:
    base = baseline.throughput if baseline else math.nan
    lines = [
        "| scenario | throughput | x baseline | x baseline (CPU) | p50 ms | p90 ms | p99 ms "
        "| max ms | emulator CPU ms/op | emulator CPU % | peak RSS MiB | load CPU % | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ([baseline] if baseline else []) + list(results):
        ratio = by_cpu = "-"
        if _ok(base) and _ok(r.throughput) and r.unit in ("ops/s", "jobs/s"):
            divisor = 3 if r.unit == "jobs/s" else 1
            ratio = f"{r.throughput / (base / divisor):.2f}" + (" (/3)" if divisor == 3 else "")
            by_cpu = _num(cpu_ratio(baseline, r), 2)
        lines.append(
            f"| {r.name} | {_num(r.throughput)} {r.unit} | {ratio} | {by_cpu} "
            f"| {_num(r.p50_ms, 2)} | {_num(r.p90_ms, 2)} | {_num(r.p99_ms, 2)} "
            f"| {_num(r.max_ms, 2)} "
            f"| {_num(r.server_cpu_ms_per_op, 3)} | {_num(r.server_cpu_percent)} "
            f"| {_num(r.peak_rss / MiB if r.peak_rss else math.nan, 1)} "
            f"| {_num(r.client_cpu_percent)} | {r.errors} |"
        )
    if checks and not quick:
        lines += ["", "| target | required | measured | result |", "|---|---|---|---|"]
        for check in checks:
            verdict = "pass" if check.passed else "**FAIL**"
            lines.append(f"| {check.target} | {check.required} | {check.measured} | {verdict} |")
    notes = [
        f"- {r.name}: " + "; ".join(f"{k}: {v}" for k, v in r.extra.items())
        for r in results
        if r.extra
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def document(
    baseline: Figures | None,
    results: Sequence[Figures],
    checks: Sequence[Check],
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {
        **meta,
        "machine": machine(),
        "baseline": baseline.to_json() if baseline else None,
        "scenarios": [r.to_json() for r in results],
        "targets": [asdict(c) for c in checks],
    }
