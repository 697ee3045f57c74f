"""Safe policy improvement: bandits learnt offline from a log, bare and wrapped in SPIBB, over independent seeds.

    python bench/safe.py [--seeds 0-9] [--decisions 30000] [--eval-decisions 20000] [--json out.json]

For each seed, as the quickstart does (``training/quickstart.py``, ``training/jobs.py``):

1. the training log: the exploring business-as-usual logger (``Explore(business_as_usual, epsilon=0.2,
   holdout=0.05)``) makes ``--decisions`` decisions on the bandit view for the customers of
   ``(seed, LOG)``, written by :func:`envs.log_writer.log_bandit_run` into a temporary SQLite
   :class:`nba.log.DecisionLog`, and read back in chunks of 10,000 with the simulator's reward rule and
   the funnel's events (``jobs._train_offline``);
2. each of the six offline bandits (linucb, lints, lgbm_egreedy, lgbm_squarecb, lgbm_funnel, send_time,
   default parameters) learns from those chunks through :class:`nba.policies.safe.SPIBB`'s ``update``
   (its learner is the bare bandit, so bare and wrapped share one training);
3. :func:`envs.rollout.bandit_truth` gives the exact value per decision of every policy on the contexts
   of ``--eval-decisions`` decisions of the logger for the customers of ``(seed, EVAL)``: the bare
   bandit, the wrapper with each baseline (``bau``: business as usual, the default; ``logger``: the
   logging policy itself, its exploration and holdout included; ``estimate``: the log's own action
   frequencies per bucket, for a log whose writer is unknown), the logger, business as usual and no
   contact.

Prints a table per bandit (value per seed), the number of seeds where each is at least the logger's
value, and their means; the wall time of the run.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.log_writer import log_bandit_run, reward_rule  # noqa: E402
from envs.rollout import bandit_truth  # noqa: E402
from envs.scenario import Scenario  # noqa: E402
from nba.log import DecisionLog  # noqa: E402
from nba.policies import Explore, create  # noqa: E402
from nba.policies.safe import SPIBB  # noqa: E402

LOG = "bench/safe/log"  # the training log's customers (envs.random)
EVAL = "bench/safe/eval"  # the evaluation contexts' customers
BANDITS = ("linucb", "lints", "lgbm_egreedy", "lgbm_squarecb", "lgbm_funnel", "send_time")
BASELINES = ("bau", "logger", "estimate")
EPSILON, HOLDOUT = 0.2, 0.05  # the quickstart's logger (jobs.simulate's defaults)
BATCH, CHUNK = 1000, 10_000  # decisions per simulated batch (jobs.BANDIT_BATCH), rows per training chunk


class Memo:
    """A trained learner whose last answer is kept: the wrappers of one learner ask it about the same rows
    (the rows with a supported action depend on the support only), so it scores them once."""

    def __init__(self, learner) -> None:
        self.learner, self.name, self.space = learner, learner.name, learner.space
        self.dim = getattr(learner, "dim", None)
        self._memo: dict[str, tuple[bytes, np.ndarray]] = {}
        if hasattr(learner, "scores"):
            self.scores = self._scores

    def _cached(self, kind: str, X: np.ndarray, mask: np.ndarray, fn) -> np.ndarray:
        key = hashlib.blake2b(
            np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(mask).tobytes(), digest_size=16
        ).digest()
        hit = self._memo.get(kind)
        if hit is None or hit[0] != key:
            hit = self._memo[kind] = (key, fn(X, mask))
        return hit[1]

    def _scores(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        fn = self.learner.scores
        takes_mask = "mask" in inspect.signature(fn).parameters
        return self._cached("scores", X, mask, fn if takes_mask else lambda X, m: fn(X))

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._cached("probabilities", X, mask, self.learner.probabilities)


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def one_seed(scenario: Scenario, seed: int, decisions: int, eval_decisions: int) -> dict[str, float]:
    space, segments = scenario.action_space, tuple(scenario.segments)
    logger = Explore(create("business_as_usual", space, segments), EPSILON, HOLDOUT)
    rule = reward_rule(penalties=True)
    with tempfile.TemporaryDirectory(prefix="nba-bench-safe-") as tmp, DecisionLog(f"sqlite:///{tmp}/log.db") as log:
        log_bandit_run(
            log, scenario, logger, decisions, seed, batch=BATCH, policy_name=logger.name, learn=False, purpose=LOG
        )
        chunks = [(b, log.funnel_events(b, rule.window_h)) for b in log.iter_batches(rule, chunk_rows=CHUNK)]
    targets: dict[str, object] = {
        "business_as_usual": create("business_as_usual", space, segments),
        "no_contact": create("no_contact", space),
    }
    for name in BANDITS:
        safe = SPIBB(space, segments, learner=create(name, space, segments, dim=scenario.feature_spec.dim))
        for b, events in chunks:
            extra = {"events": events} if safe.learns_from_events else {}
            safe.update(b.context, b.action, b.reward, b.propensity, **extra)
        memo = Memo(safe.learner)
        targets[f"{name}/bare"] = memo
        for base in BASELINES:
            kw = (
                {"baseline": "estimate"}
                if base == "estimate"
                else {"baseline_epsilon": EPSILON, "baseline_holdout": HOLDOUT}
                if base == "logger"
                else {}
            )
            if base == "bau":  # the default wrapper, as trained: its own learner, no memo
                targets[f"{name}/{base}"] = safe
                continue
            params = safe.get_state()[0]
            wrapped = SPIBB(
                space,
                segments,
                learner=memo,
                n_min=params["n_min"],
                bucket=params["bucket"],
                group=params["group"],
                improve=params["improve"],
                **kw,
            )
            wrapped.counts = safe.counts
            targets[f"{name}/{base}"] = wrapped
    truth = bandit_truth(scenario, logger, targets, eval_decisions, BATCH, seed, purpose=EVAL)
    truth["logger"] = truth.pop("logging")
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--decisions", type=int, default=30_000)
    ap.add_argument("--eval-decisions", type=int, default=20_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    scenario = Scenario.default()
    defaults = SPIBB(scenario.action_space, tuple(scenario.segments), learner="linucb").get_state()[0]
    print(
        f"bench/safe: {len(seeds)} seeds, training log {args.decisions:,} decisions ({LOG!r}), evaluation "
        f"{args.eval_decisions:,} ({EVAL!r}); SPIBB n_min={defaults['n_min']:g}, bucket={defaults['bucket']}, "
        f"group={defaults['group']}, improve={defaults['improve']}",
        flush=True,
    )
    t0 = time.perf_counter()
    runs: dict[int, dict[str, float]] = {}
    for seed in seeds:
        t = time.perf_counter()
        runs[seed] = one_seed(scenario, seed, args.decisions, args.eval_decisions)
        r = runs[seed]
        print(
            f"  seed {seed}: logger {r['logger']:.3f}, business as usual {r['business_as_usual']:.3f}, no contact "
            f"{r['no_contact']:.3f}, lgbm_funnel bare {r['lgbm_funnel/bare']:.3f} safe {r['lgbm_funnel/bau']:.3f} "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    wall = time.perf_counter() - t0

    def row(label: str, key: str) -> str:
        v = np.array([runs[s][key] for s in seeds])
        logger = np.array([runs[s]["logger"] for s in seeds])
        bau = np.array([runs[s]["business_as_usual"] for s in seeds])
        return (
            f"{label:<28}" + "".join(f"{x:7.3f}" for x in v) + f" | {v.mean():6.3f} {int((v >= logger).sum()):4d}"
            f"/{len(seeds)} {int((v >= bau).sum()):4d}/{len(seeds)}"
        )

    head = f"{'exact value':<28}" + "".join(f"{'s' + str(s):>7}" for s in seeds) + " |   mean >=logger  >=bau"
    print("\n" + head)
    for key in ("logger", "business_as_usual", "no_contact"):
        print(row(key, key))
    for name in BANDITS:
        print()
        for variant in ("bare", *BASELINES):
            label = f"{name} {variant if variant == 'bare' else 'safe/' + variant}"
            print(row(label, f"{name}/{variant}"))
    print(f"\nwall {wall:.0f} s ({wall / len(seeds):.0f} s a seed) on {platform.machine()}, {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seeds": seeds,
                    "runs": {str(s): r for s, r in runs.items()},
                    "spibb": defaults,
                    "wall_s": wall,
                    "decisions": args.decisions,
                    "eval_decisions": args.eval_decisions,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
