"""Gates: judge a canary window against absolute limits and against the baseline.

`judge` returns a Verdict: `judged` is False while the canary window holds fewer than
`min_requests` (too little traffic says nothing; the step waits). Comparisons with
the baseline need the baseline window to hold `min_requests` too (at high canary
weights it may not): without that they are skipped and say so in `values`.
A failing verdict lists every failing gate in `reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.rollout.plan import Gates
from gateway.rollout.stats import Window

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    judged: bool
    ok: bool
    reasons: tuple[str, ...] = ()
    values: dict[str, float | int | str] = field(default_factory=dict)

    def describe(self) -> str:
        return " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values.items()
        )


def judge(gates: Gates, canary: Window, baseline: Window) -> Verdict:
    values: dict[str, float | int | str] = {
        "canary_requests": canary.requests,
        "canary_5xx_ratio": canary.error_ratio,
        "canary_p99_s": canary.p99,
        "baseline_requests": baseline.requests,
        "baseline_5xx_ratio": baseline.error_ratio,
        "baseline_p99_s": baseline.p99,
    }
    if canary.requests < gates.min_requests:
        values["not_judged"] = f"{canary.requests} < min_requests {gates.min_requests}"
        return Verdict(False, True, (), values)
    reasons: list[str] = []
    ratio = canary.error_ratio
    p99 = canary.p99
    if gates.max_5xx_ratio is not None and ratio > gates.max_5xx_ratio:
        reasons.append(f"5xx ratio {ratio:.3f} > max_5xx_ratio {gates.max_5xx_ratio:g}")
    if gates.max_p99_s is not None and p99 > gates.max_p99_s:
        reasons.append(f"p99 {p99:g}s > max_p99 {gates.max_p99_s:g}s")
    comparative = gates.max_5xx_ratio_delta is not None or gates.max_p99_ratio is not None
    if comparative and baseline.requests < gates.min_requests:
        values["vs_stable"] = f"skipped: baseline {baseline.requests} < {gates.min_requests}"
    elif comparative:
        delta = ratio - baseline.error_ratio
        if gates.max_5xx_ratio_delta is not None and delta > gates.max_5xx_ratio_delta + 1e-12:
            reasons.append(
                f"5xx ratio {ratio:.3f} exceeds the baseline's {baseline.error_ratio:.3f} "
                f"by more than {gates.max_5xx_ratio_delta:g}"
            )
        base_p99 = baseline.p99
        if (
            gates.max_p99_ratio is not None
            and base_p99 > 0
            and p99 / base_p99 > gates.max_p99_ratio
        ):
            reasons.append(
                f"p99 {p99:g}s is {p99 / base_p99:.2f}x the baseline's {base_p99:g}s "
                f"(max_p99_ratio {gates.max_p99_ratio:g})"
            )
    return Verdict(True, not reasons, tuple(reasons), values)
