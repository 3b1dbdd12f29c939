"""The study's statistics: each comparison of two mixers, and the verdict per task drawn from them.

Per task the report starts with one bottom-line sentence a decision can rest on ("Use the SSM: ...", "Keep the
gated conv: ...", or "Inconclusive: seeds disagree (...)"), then the evidence: the paper's prediction (the
long-sequence test on the tokens the mixers see, and whether the task is causal) and every comparison measured.
The SSM is compared with the conv (the ablation the paper makes: Mamba = Gated CNN + SSM).

How a comparison of mixer a with mixer b is decided (Δ = difference of their mean accuracies over seeds):

- test-set sampling error σ_s = sqrt(p(1-p)/n) at their pooled accuracy p, n the scored test items;
- the bound b = max(SEED_AGREEMENT_SIGMAS·σ_s, MIN_DISAGREEMENT_POINTS): more than the test sample explains (two
  ±2σ_s bands that do not touch);
- the mixers are *separated* when every seed of one beats every seed of the other by more than b: then Δ counts,
  however much each mixer's seeds vary (a seed that learnt late still beat every seed of the other);
- otherwise a mixer's seeds *disagree* when their spread (best minus worst seed) exceeds b and either exceeds |Δ| or
  leaves |Δ| under 2σ: the outcome depends on the seed and the comparison is *inconclusive*, whatever the means say;
- otherwise Δ counts when |Δ| ≥ 2σ, σ = the larger of the two mixers' seed standard deviations and σ_s; smaller
  differences are "within noise".

A measurement that goes against the paper's prediction is said to contradict the paper.
"""

from __future__ import annotations

import math
from typing import Any

PAPER_CAUSAL_ATTENTION = "the paper: causal attention cost ViT-Ti 1.6 and ViT-S 0.9 ImageNet top-1 points"
SEED_AGREEMENT_SIGMAS = 4.0
MIN_DISAGREEMENT_POINTS = 2.0


def _accuracies(s: dict[str, Any]) -> list[float]:
    """A mixer's accuracy per seed (its mean alone where the seeds are not listed)."""
    return s.get("accuracies") or [s["accuracy_mean"]]


def _spread(s: dict[str, Any]) -> float:
    accs = _accuracies(s)
    return 100 * (max(accs) - min(accs))


def seed_values(s: dict[str, Any]) -> str:
    """A mixer's per-seed accuracies as "40.4 and 99.7" (or "12.0, 24.3 and 99.5")."""
    values = [f"{100 * a:.1f}" for a in _accuracies(s)]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Mixer summary `a` against `b`: Δ accuracy in points, 2σ noise level, seed agreement, cost ratios.

    Example:
        >>> s = lambda accs: dict(accuracy_mean=sum(accs) / len(accs), accuracy_std=0.0, accuracies=accs,
        ...                       eval_count=2048, train_seconds_mean=1.0)
        >>> compare(s([1.0, 0.56]), s([0.995, 0.997]))["seeds_disagree"]
        True
    """
    delta = 100 * (a["accuracy_mean"] - b["accuracy_mean"])
    p = (a["accuracy_mean"] + b["accuracy_mean"]) / 2
    sampling = 100 * math.sqrt(max(p * (1 - p), 0.0) / a["eval_count"])
    sigma = max(100 * a["accuracy_std"], 100 * b["accuracy_std"], sampling)
    bound = max(SEED_AGREEMENT_SIGMAS * sampling, MIN_DISAGREEMENT_POINTS)
    sides = dict(a=a, b=b)
    lo_a, hi_a, lo_b, hi_b = (100 * f(_accuracies(s)) for s in (a, b) for f in (min, max))
    separated = lo_a - hi_b > bound or lo_b - hi_a > bound
    noisy = [k for k, s in sides.items() if _spread(s) > bound]
    disagree = [] if separated else [k for k in noisy if _spread(sides[k]) > abs(delta)]
    if not separated and noisy and not disagree and abs(delta) < 2 * sigma:
        disagree = noisy  # the means' difference is drowned by a seed that varies beyond the test sample
    out = dict(
        delta_points=delta,
        noise_2sigma=2 * sigma,
        seed_bound_points=bound,
        separated=separated,
        seeds_disagree=bool(disagree),
        disagreeing=disagree,
        varying=noisy,
        significant=separated or (not disagree and abs(delta) >= 2 * sigma),
    )
    for key in ("latency_ms_b1", "latency_ms_bN", "macs", "params", "peak_train_mem_mb", "state_mb"):
        if a.get(key) and b.get(key):
            out[f"{key}_ratio"] = a[key] / b[key]
    # per step: a run the stop rule ended early took less time, not less time per step (whole runs where a side
    # does not count its steps)
    key = "step_seconds_mean" if "step_seconds_mean" in a and "step_seconds_mean" in b else "train_seconds_mean"
    out["step_seconds_ratio"] = a[key] / max(b[key], 1e-9)
    return out


def _seeds_of(names: tuple[str, str], summaries: tuple[dict, dict], keys: list[str]) -> str:
    """ "ssm: 40.4 and 99.7" for each side ("a", "b") of a comparison in `keys` (its disagreeing or varying sides),
    joined by "; "."""
    sides = dict(zip("ab", zip(names, summaries)))
    return "; ".join(f"{sides[k][0]}: {seed_values(sides[k][1])}" for k in keys)


def _cost(c: dict[str, Any]) -> str:
    """ "3.1× the latency and 2.5× the memory" (batch 1 latency, training-step memory), or "" when unmeasured."""
    parts = []
    if "latency_ms_b1_ratio" in c:
        parts.append(f"{c['latency_ms_b1_ratio']:.1f}× the latency")
    if "peak_train_mem_mb_ratio" in c:
        parts.append(f"{c['peak_train_mem_mb_ratio']:.1f}× the memory")
    if "state_mb_ratio" in c:  # a streaming task: per-frame latency and the state kept after 10⁴ frames
        parts.append(f"{c['state_mb_ratio']:.1f}× the streaming state")
    return " and ".join(parts)


def _delta_sentence(name_a: str, name_b: str, c: dict[str, Any], summaries: tuple[dict, dict] | None = None) -> str:
    cost = ""
    if "latency_ms_b1_ratio" in c:
        at_n = f"; {c['latency_ms_bN_ratio']:.1f}x at batch N" if "latency_ms_bN_ratio" in c else ", streaming"
        cost = (
            f" at {c['latency_ms_b1_ratio']:.1f}x the latency (batch 1{at_n}), {c.get('macs_ratio', 0):.2f}x the MACs "
            f"and {c['step_seconds_ratio']:.1f}x the time per training step"
        )
    names = (name_a, name_b)
    if c.get("seeds_disagree"):
        return (
            f"{name_a} vs {name_b}: inconclusive (seeds disagree: "
            f"{_seeds_of(names, summaries, c['disagreeing'])}; Δ of the means = {c['delta_points']:+.1f} points)"
        )
    if not c["significant"]:
        return (
            f"{name_a} vs {name_b}: within noise (Δ = {c['delta_points']:+.1f} points, |Δ| < 2σ = "
            f"{c['noise_2sigma']:.1f}){cost}"
        )
    if c.get("separated") and abs(c["delta_points"]) < c["noise_2sigma"]:
        return (
            f"{name_a} vs {name_b}: {c['delta_points']:+.1f} points (every seed by more than "
            f"{c['seed_bound_points']:.1f}; seeds: {_seeds_of(names, summaries, c['varying'])}){cost}"
        )
    return f"{name_a} vs {name_b}: {c['delta_points']:+.1f} points (2σ = {c['noise_2sigma']:.1f}){cost}"


def bottom_line(mixers: dict[str, dict[str, Any]], c: dict[str, Any] | None) -> str:
    """The one sentence a decision rests on: SSM vs the gated conv (`c` = compare(ssm, conv)), per the rules above.

    Example:
        >>> bottom_line({"conv": {}, "ssm": {}}, dict(delta_points=0.3, significant=False, noise_2sigma=2.0,
        ...             seeds_disagree=False, latency_ms_b1_ratio=3.1))
        'Keep the gated conv: the SSM adds nothing measurable here (+0.3 points, noise ±2.0) at 3.1× the latency.'
    """
    if c is None:
        scored = {m: s for m, s in mixers.items() if "accuracy_mean" in s}
        best = max(scored, key=lambda m: scored[m]["accuracy_mean"])
        return (
            f"No SSM-vs-gated-conv comparison here (mixers: {', '.join(mixers)}); the best is {best} at "
            f"{100 * scored[best]['accuracy_mean']:.1f} %."
        )
    cost = _cost(c)
    pair = ("ssm", "conv"), (mixers["ssm"], mixers["conv"])
    if c["seeds_disagree"]:
        return f"Inconclusive: seeds disagree ({_seeds_of(*pair, c['disagreeing'])})."
    varying = _seeds_of(*pair, c["varying"]) if c.get("separated") else ""
    seeds = f" (every seed ahead; {varying})" if varying else ""
    if c["significant"] and c["delta_points"] > 0:
        return f"Use the SSM: {c['delta_points']:+.1f} points over the gated conv{seeds}" + (
            f" at {cost}." if cost else "."
        )
    if c["significant"]:
        return f"Keep the gated conv: the SSM is {-c['delta_points']:.1f} points worse{seeds}" + (
            f" at {cost}." if cost else "."
        )
    return (
        f"Keep the gated conv: the SSM adds nothing measurable here ({c['delta_points']:+.1f} points, noise "
        f"±{c['noise_2sigma']:.1f})" + (f" at {cost}." if cost else ".")
    )


def _cheaper_alternative(verdict: dict[str, Any]) -> str:
    """ " Causal attention does as well at 0.7× the SSM's latency." when the SSM wins and attention matches it."""
    main = verdict.get("ssm_vs_conv")
    if not main or not main["significant"] or main["delta_points"] <= 0:
        return ""
    for name, label in (("attn_causal", "Causal attention"), ("attn", "Attention")):
        c = verdict.get(f"ssm_vs_{name}")
        if c and not c["seeds_disagree"] and c.get("latency_ms_b1_ratio", 0) > 1:
            if not c["significant"]:
                return f" {label} does as well (within noise) at {1 / c['latency_ms_b1_ratio']:.1f}× the SSM's latency."
            if c["delta_points"] < 0:
                return (
                    f" {label} does better ({-c['delta_points']:+.1f} points) at "
                    f"{1 / c['latency_ms_b1_ratio']:.1f}× the SSM's latency."
                )
    return ""


def task_verdict(task: dict[str, Any]) -> dict[str, Any]:
    """Bottom line, prediction and measured comparisons for one task of results.json (see the module docstring)."""
    mixers, pred = task["mixers"], task["prediction"]
    expected = pred["ssm_expected_to_help"]
    lines = []
    verdict = dict(
        expected_to_help=expected,
        prediction=(
            f"L = {pred['seq_len']} tokens at width D = {pred['dim']}, r_L = L/6D = {pred['r_L']:.2f}; "
            f"{pred['verdict']}. SSM {'expected' if expected else 'not expected'} to help."
        ),
    )
    main = None
    if "ssm" in mixers and "conv" in mixers:
        main = c = compare(mixers["ssm"], mixers["conv"])
        verdict["ssm_vs_conv"] = c
        helped = c["significant"] and c["delta_points"] > 0
        if c["seeds_disagree"]:
            agree = "the paper's prediction cannot be checked"
        elif expected:
            agree = "agrees with the paper" if helped else "contradicts the paper's expectation (in this budget)"
        else:
            agree = "contradicts the paper" if helped else "agrees with the paper (Hypothesis 1)"
        verdict["agreement"] = agree
        lines.append(f"{_delta_sentence('ssm', 'conv', c, (mixers['ssm'], mixers['conv']))}: {agree}.")
    for a, b, note in (
        ("attn_causal", "conv", ""),
        ("attn", "conv", ""),
        ("ssm", "attn_causal", ""),
        ("ssm", "attn", ""),
        ("attn_causal", "attn", f" ({PAPER_CAUSAL_ATTENTION})"),
    ):
        if a in mixers and b in mixers and not (a == "attn_causal" and b == "conv" and "attn" in mixers):
            c = compare(mixers[a], mixers[b])
            verdict[f"{a}_vs_{b}"] = c
            lines.append(_delta_sentence(a, b, c, (mixers[a], mixers[b])) + note + ".")
    verdict["bottom_line"] = bottom_line(mixers, main) + _cheaper_alternative(verdict)
    verdict["measured"] = lines or ["one mixer only: nothing to compare"]
    return verdict
