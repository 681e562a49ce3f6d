"""What a study found: its trials as a table, the Pareto front and its plot. Each trial shows
both losses: on validation (what the search chose on) and on dev (what to expect); see
`autoprumux._selection`."""

from __future__ import annotations

from typing import Any

from autoprumux._selection import VALIDATION, describe_losses, dev_chosen_line, recorded_losses
from autoprumux.config import Candidate
from autoprumux.search._record import pooled_trial_losses, trial_loss


def trial_candidate(t: Any) -> Candidate | None:
    """The configuration a trial recorded (None before it sampled one)."""
    record = t.user_attrs.get("config")
    return Candidate.from_dict(record) if record is not None else None


def describe_trial(t: Any) -> str:
    cfg = trial_candidate(t)
    head = f"#{t.number} {cfg.describe() if cfg else '-'}"
    got = recorded_losses(t.user_attrs)
    if t.state.name == "COMPLETE" and got is not None:
        return (
            f"{head} {describe_losses(got.dev, got.validation, got.validation_se)} {t.value:.2f}x"
        )
    return f"{head} {t.state.name.lower()}"


def pooled_note(trials: list[Any], best: Any) -> str:
    """What the best trial was chosen on when pooling along sparsity moved its loss
    (`pooled_trial_losses`); empty when it did not."""
    done = [t for t in trials if t.state.name == "COMPLETE"]
    pooled = dict(zip((t.number for t in done), pooled_trial_losses(done), strict=True))
    raw, got = trial_loss(best), pooled.get(best.number)
    if raw is None or got is None or abs(got - raw) < 0.005:
        return ""
    return f" (pooled along sparsity: chosen on {got:.2f})"


def config_label(cfg: Candidate | None) -> str:
    """The configuration as the trials table shows it; a late multiplexed model's per-instance
    layers and combiner are in `describe` (" k=2 concat")."""
    if cfg is None:
        return "-"
    label = cfg.describe()
    if cfg.technique == "prumux" and cfg.mux > 1:
        label += f" {cfg.mux_variant}"
    return label


def trials_table(trials: list[Any], best: Any | None, budget: float) -> str:
    """The trials (by number) as a table with both losses (val loss: on validation, chosen on;
    dev loss: on dev, expected), the best one within `budget` (on the loss that chose), and a
    line when the dev loss chose."""
    trials = sorted(trials, key=lambda t: t.number)
    labels = [config_label(trial_candidate(t)) for t in trials]
    w = max([22, *(len(x) + 1 for x in labels)])  # late models' labels are longer
    head = (
        f"{'trial':>5} {'state':<9} {'configuration':<{w}}{'val loss':>9}{'dev loss':>9}"
        f"{'speedup':>9}{'seconds':>9}"
    )
    lines = [head, "-" * len(head)]
    dev_chosen: set[str] = set()
    for t, label in zip(trials, labels, strict=True):
        ua = t.user_attrs
        got = recorded_losses(ua)
        dev, val = (got.dev, got.validation) if got else (None, None)
        if got is not None and t.state.name == "COMPLETE" and got.chosen_on != VALIDATION:
            dev_chosen.add(got.chosen_on)
        lines.append(
            f"{t.number:>5} {t.state.name:<9} {label:<{w}}"
            + "".join(f"{x:>9.2f}" if x is not None else f"{'-':>9}" for x in (val, dev))
            # a pruned trial's value is its last intermediate loss, not a speedup
            + (f"{t.value:>8.2f}x" if t.state.name == "COMPLETE" else f"{'-':>9}")
            + f"{ua.get('trial_seconds', 0.0):>9.0f}"
        )
    lines.append(
        f"best within {budget:g} points: "
        + (
            describe_trial(best) + pooled_note(trials, best)
            if best
            else "none (loosen --budget or add trials)"
        )
    )
    lines += [f"({line})" for on in sorted(dev_chosen) if (line := dev_chosen_line(on))]
    return "\n".join(lines)


def pareto_points(rows: list[tuple[float, float]]) -> list[int]:
    """Indices of (loss, speedup) rows not dominated (lower loss and higher speedup are better)."""
    keep = []
    for i, (li, si) in enumerate(rows):
        dominated = any(
            (lj <= li and sj >= si) and (lj < li or sj > si)
            for j, (lj, sj) in enumerate(rows)
            if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


def pareto_figure(trials: list[Any], budget: float, title: str = "") -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    # the loss the search chose on (validation; dev without a split)
    rows = [(float(trial_loss(t) or 0.0), float(t.value)) for t in trials]
    front = sorted((rows[i] for i in pareto_points(rows)), key=lambda r: r[0])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.scatter([r[0] for r in rows], [r[1] for r in rows], s=18, alpha=0.6, label="trials")
    ax.plot([r[0] for r in front], [r[1] for r in front], "o-", color="C3", label="Pareto front")
    ax.axvline(budget, color="gray", ls="--", label=f"budget {budget:g} pts")
    ax.set_xlabel("accuracy loss on validation, chosen on (points)")
    ax.set_ylabel("speedup (x)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return fig
