"""The quickstart: every pipeline once, end to end, on the embedded defaults.

1. simulate two decision logs with an exploring business-as-usual logging policy (training and
   evaluation, different customers);
2. train the baselines, the contextual bandits (offline, from the training log) and fitted-Q
   (on simulated journeys), each logged and registered in MLflow;
3. evaluate every policy off-policy on the evaluation log, beside its exact value (the simulator
   replays the logging run and knows every expected reward);
4. register the best by the doubly-robust estimate's lower confidence bound as ``champion`` (a
   conservative choice: a noisy estimate does not win on luck) and the runner-up as ``challenger``;
5. check the simulator's calibration against the articles' figures.

Everything lands under one folder: the MLflow store (``mlflow.db`` and ``mlartifacts/``), the
decision logs, the plots and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINES = ("no_contact", "uniform_random", "batch_and_blast", "business_as_usual", "rule_based_journey")
BANDITS = ("linucb", "lints", "lgbm_egreedy", "lgbm_squarecb", "lgbm_funnel", "send_time")
FQI_PARAMS = {"iterations": 4, "num_boost_round": 60, "min_data_in_leaf": 400, "max_candidates": 24}


@dataclass(frozen=True)
class Row:
    policy: str
    version: str
    dr: Any  # nba.ope.Estimate
    snips: Any
    truth: float | None


@dataclass(frozen=True)
class QuickstartResult:
    rows: list[Row]
    champion: Row
    challenger: Row
    logging_truth: float | None
    tracking_uri: str
    out: Path
    seconds: float


def run(out: Path, *, decisions: int = 30_000, eval_decisions: int = 20_000, customers: int = 2000, seed: int = 0,
        progress: Callable[[str, int], AbstractContextManager[Callable[[], None]]],
        say: Callable[[str], None] = print) -> QuickstartResult:
    """Run the quickstart into ``out``; ``progress(description, total)`` gives a ticking context."""
    from training import jobs, registry

    t0 = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = registry.use_store(out, experiment="nba-quickstart")
    train_log, eval_log = f"sqlite:///{out / 'train-log.db'}", f"sqlite:///{out / 'eval-log.db'}"
    for url in (train_log, eval_log):
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    batches = -(-decisions // jobs.BANDIT_BATCH)
    with progress(f"simulate training log ({decisions:,} decisions)", batches) as tick:
        jobs.simulate(train_log, decisions=decisions, seed=seed, progress=tick)
    with progress(f"simulate evaluation log ({eval_decisions:,})", -(-eval_decisions // jobs.BANDIT_BATCH)) as tick:
        jobs.simulate(eval_log, decisions=eval_decisions, seed=seed + 1, progress=tick)
    versions: dict[str, str] = {}
    names = [*BASELINES, *BANDITS, "fqi"]
    with progress("train and register policies", len(names)) as tick:
        for name in names:
            if name == "fqi":
                res = jobs.train("fqi", source=jobs.SIMULATOR, params=FQI_PARAMS, customers=customers, seed=seed,
                                 plots_dir=out / "plots" / name)
            else:
                res = jobs.train(name, source=train_log, seed=seed, plots_dir=out / "plots" / name)
            versions[name] = res.version
            tick()
    say("evaluating every registered version off-policy (and against the simulator's truth)...")
    ev = jobs.evaluate(eval_log, [versions[n] for n in names], plots_dir=out / "plots" / "evaluation", seed=seed)
    rows = []
    for name, (label, est) in zip(names, ev.estimates.items(), strict=True):
        rows.append(Row(name, versions[name], est["dr"], est["snips"], None if ev.truth is None else ev.truth[label]))
    ranked = sorted(rows, key=lambda r: r.dr.ci_low, reverse=True)
    champion, challenger = ranked[0], ranked[1]
    registry.set_alias(registry.CHAMPION, champion.version)
    registry.set_alias(registry.CHALLENGER, challenger.version)
    reason = "quickstart: best doubly-robust lower confidence bound"
    registry.version_tags(champion.version, {"promotion.reason": reason})
    return QuickstartResult(rows, champion, challenger, ev.logging_truth, uri, out, time.perf_counter() - t0)


def write_summary(res: QuickstartResult, extra: dict[str, Any]) -> Path:
    summary = {
        "tracking_uri": res.tracking_uri,
        "champion": {"policy": res.champion.policy, "version": res.champion.version},
        "challenger": {"policy": res.challenger.policy, "version": res.challenger.version},
        "logging_policy_true_value": res.logging_truth,
        "policies": {r.policy: {"version": r.version, "dr": r.dr.value, "dr_ci": [r.dr.ci_low, r.dr.ci_high],
                                "snips": r.snips.value, "true_value": r.truth} for r in res.rows},
        "seconds": res.seconds,
        **extra,
    }
    path = res.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
