"""The pipelines end to end against real MLflow stores (SQLite; PostgreSQL too, and always under CI)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest

from nba.log import DecisionLog
from nba.ope import lift
from nba.policies.base import uniform
from nba.policies.fqi import returns_to_go
from training import jobs, registry

PURPOSE = "test/training/jobs"  # this module's customers (envs.random)

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def store(request, tmp_path_factory):
    """A fresh tracking + registry store: SQLite file, or a new PostgreSQL database."""
    root = tmp_path_factory.mktemp(f"store-{request.param}")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    dbname = None
    if request.param == "postgresql":
        if not _pg_available():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is unreachable, and CI must run these tests")
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable")
        import psycopg

        dbname = f"nba_mlflow_{uuid.uuid4().hex[:10]}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        os.environ["MLFLOW_TRACKING_URI"] = f"{PG_SERVER}/{dbname}"
    uri = registry.use_store(root, experiment="tests")
    yield {"root": root, "uri": uri, "log": f"sqlite:///{root / 'log.db'}", "eval": f"sqlite:///{root / 'eval.db'}"}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if old is not None:
        os.environ["MLFLOW_TRACKING_URI"] = old
    if dbname is not None:
        import psycopg

        mlflow.set_tracking_uri("file:///tmp/unused")
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def _runs() -> int:
    return len(mlflow.search_runs(search_all_experiments=True, output_format="list"))


def test_bad_input_fails_before_any_run(store):
    before = _runs()
    with pytest.raises(jobs.JobError, match="valid: .*lints"):
        jobs.train("magic", source=store["log"])
    with pytest.raises(jobs.JobError, match="param: 'lints' has no parameter 'alhpa'; valid: .*"):
        jobs.train("lints", params={"alhpa": 1.0})
    # the LightGBM bandits take their model's parameters by name, and each value is of its parameter's type
    assert "num_boost_round" in jobs.policy_parameters("lgbm_egreedy") and "kw" not in jobs.policy_parameters(
        "lgbm_egreedy"
    )
    for params, said in (
        ({"num_boost_round": "abc"}, "param: num_boost_round: expected int, got 'abc'"),
        ({"num_boost_round": 2.5}, "param: num_boost_round: expected int, got 2.5"),
        ({"epsilon": "high"}, "param: epsilon: expected float, got 'high'"),
        ({"epsilon": True}, "param: epsilon: expected float, got True"),
    ):
        with pytest.raises(jobs.JobError, match=f"^{re.escape(said)}$"):
            jobs.train("lgbm_egreedy", source=store["log"], params=params)
    jobs.check_policy("lgbm_egreedy", {"num_boost_round": 20, "epsilon": 0, "learning_rate": 0.05})
    with pytest.raises(jobs.JobError, match="scenario: no such file"):
        jobs.simulate(store["log"], scenario_path="/nonexistent.toml")
    with pytest.raises(jobs.JobError, match="epsilon"):
        jobs.simulate(store["log"], epsilon=1.5)
    with pytest.raises(jobs.JobError, match=r"^messages: the share of message exploration must be in \[0, 1\]"):
        jobs.simulate(store["log"], messages=1.5)
    with pytest.raises(jobs.JobError, match="metric"):
        jobs.promote(metric="magic")
    assert _runs() == before


def test_simulate_with_message_exploration_records_and_replays_its_logger(store):
    """A log of business as usual's contacts with random messages: its replay spec names the share, and the
    logger rebuilt from it gives the logged propensities, so evaluation reads the exact logging distribution."""
    url = f"sqlite:///{store['root'] / 'messages.db'}"
    jobs.simulate(url, decisions=3000, seed=0, purpose="test/jobs/messages", messages=0.8)
    replay = jobs.find_simulation(url)
    assert replay["messages"] == 0.8 and replay["epsilon"] == 0.2
    _, logger = jobs.replay_logging(replay)
    assert logger.messages == 0.8 and logger.name == "business_as_usual+explore0.2+messages0.8+holdout0.05"
    with DecisionLog(url) as log:
        batch = log.read(jobs.sim_reward_rule())
    probs = logger.probabilities(batch.context, batch.eligible)
    np.testing.assert_allclose(probs[np.arange(len(batch)), batch.action], batch.propensity, rtol=1e-6)
    # whom to contact stays business as usual's: its no-contact probability, mixed as before
    bau = jobs.replay_logging({**replay, "epsilon": 0.0, "holdout": 0.0, "messages": 0.0})[1]
    plain = bau.probabilities(batch.context, batch.eligible)
    np.testing.assert_allclose(probs[:, 0], 0.75 * plain[:, 0] + 0.2 * uniform(batch.eligible)[:, 0] + 0.05)
    # a log written before message exploration existed replays without it
    old = {k: v for k, v in replay.items() if k != "messages"}
    assert not getattr(jobs.replay_logging(old)[1], "messages", 0.0)


def test_simulate_train_evaluate_promote(store, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the jobs draw figures without a plots_dir
    sim = jobs.simulate(store["log"], decisions=4000, seed=0)
    assert sim.rows == 4000
    run = mlflow.get_run(sim.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dataset.source"] == "simulator"
    assert run.data.tags["code.version"]
    jobs.simulate(store["eval"], decisions=3000, seed=1)

    bau = jobs.train("business_as_usual", source=store["log"])
    lints = jobs.train("lints", source=store["log"])
    assert bau.version and lints.version and bau.version != lints.version
    trained = mlflow.get_run(lints.run_id)
    assert trained.data.metrics["rows"] == 4000
    assert trained.data.params["source"] == "decision_log"
    assert trained.data.tags["dataset.digest"] == run.data.tags["dataset.digest"]
    assert [i.dataset.name for i in trained.inputs.dataset_inputs] == ["decision-log"]

    ev = jobs.evaluate(store["eval"], [bau.version, lints.version], n_bootstrap=50)
    assert ev.truth is not None and set(ev.truth) == set(ev.estimates)
    # its figures are the run's; the folder they were drawn in is gone
    drawn = {a.path for a in mlflow.MlflowClient().list_artifacts(ev.run_id, "plots")}
    assert {"plots/ope_intervals.png", "plots/ope_ranking.png", "plots/channel_mix.png"} <= drawn
    assert not list(tmp_path.glob("nba-*")), list(tmp_path.glob("nba-*"))
    for label, est in ev.estimates.items():
        # the exact value on these contexts lies within the DR interval, stretched by half its width
        dr = est["dr"]
        half = (dr.ci_high - dr.ci_low) / 2
        assert dr.ci_low - half <= ev.truth[label] <= dr.ci_high + half, (label, dr, ev.truth[label])
    evaluated = registry.latest_evaluation(lints.version)
    assert {"dr", "dr.ci_low", "dr.ci_high", "ess", "flag.unsupported", "true_value"} <= set(evaluated.metrics)
    assert evaluated.propensity == "logged" and ev.propensity == jobs.PROPENSITY_LOGGED
    assert ev.deployment is None and mlflow.get_run(ev.run_id).data.tags["eval.truth"] == "simulator"
    eval_digest = mlflow.get_run(ev.run_id).data.tags["dataset.digest"]
    assert evaluated.dataset == eval_digest
    # the figures are metrics of the version's logged model, on the evaluation log's dataset, from a run
    # nested in the evaluate run
    label = next(k for k in ev.estimates if k.endswith(f" v{lints.version}"))
    dr = ev.estimates[label]["dr"]
    model_id = registry.logged_model_id(lints.version)
    assert mlflow.get_logged_model(model_id).name == "lints-safe"  # named after its policy in the experiment's models
    on_model = {m.key: m for m in mlflow.get_logged_model(model_id).metrics if m.run_id == evaluated.run_id}
    assert (on_model["dr"].value, on_model["dr.ci_low"].value, on_model["dr.ci_high"].value) == (
        dr.value,
        dr.ci_low,
        dr.ci_high,
    )
    assert {(m.dataset_name, m.dataset_digest) for m in on_model.values()} == {(registry.DATASET_NAME, eval_digest)}
    assert on_model["true_value"].value == ev.truth[label]
    nested = mlflow.get_run(evaluated.run_id)
    assert nested.data.tags["mlflow.parentRunId"] == ev.run_id and nested.info.run_name == f"evaluate {label}"
    assert [i.model_id for i in nested.inputs.model_inputs] == [model_id]
    on_log = [{"dataset_name": registry.DATASET_NAME, "dataset_digest": eval_digest}]
    hits = mlflow.search_logged_models(output_format="list", filter_string=f"metrics.dr >= {dr.value}", datasets=on_log)
    assert model_id in {h.model_id for h in hits}
    # the version reads in one line: the policy, what it learned from, and the estimate with its interval
    described = mlflow.MlflowClient().get_model_version(registry.MODEL_NAME, lints.version).description
    train_digest = run.data.tags["dataset.digest"]
    assert described.startswith(
        f"lints (safe) trained on 4,000 decisions of {store['log']} (digest {train_digest}, scenario "
    )
    head = ev.estimates[label][jobs.RANK_BY]  # the estimate pipelines rank and promote by
    line = (
        f"; evaluated {jobs.RANK_BY.upper()} {head.value:.4g} [{head.ci_low:.4g}, {head.ci_high:.4g}] per "
        f"decision on 3,000 decisions of {store['eval']} (digest {eval_digest}; logging policy "
        f"{ev.logging_value[0]:.4g}"
    )
    assert line in described

    registry.set_alias(registry.CHAMPION, bau.version)
    registry.set_alias(registry.CHALLENGER, lints.version)
    result = jobs.promote()
    champion = registry.alias_state(registry.CHAMPION).version
    truth = {label.split(" v")[-1]: v for label, v in ev.truth.items()}
    assert champion == (lints.version if result.promoted else bau.version)
    # both evaluated on one log in one run kept their replicates: the decision is the paired lift's, the
    # same as nba.ope.lift of the two estimates the evaluation returned
    base = next(k for k in ev.estimates if k.endswith(f" v{bau.version}"))
    paired = lift(ev.estimates[label]["dr"], ev.estimates[base]["dr"])
    assert "paired dr lift" in result.reason and f"{paired.ci_low:+.4g}" in result.reason
    assert result.promoted == (paired.ci_low > 0 and not paired.unsupported)
    stored = registry.paired_lift(evaluated, registry.latest_evaluation(bau.version), "dr")
    assert (stored.value, stored.ci_low, stored.ci_high) == pytest.approx((paired.value, paired.ci_low, paired.ci_high))
    assert truth  # both evaluated against the simulator


def _decisions(first: int, n: int):
    """Decisions ``first .. first + n - 1`` of one log (their ids, customers and times follow the index)."""
    from nba.log.records import LoggedBatch

    rng = np.random.default_rng(first)
    i = np.arange(first, first + n)
    return LoggedBatch(
        decision_id=np.array([f"D{k:07d}" for k in i], object),
        time=i * 60.0,
        customer_id=np.array([f"C{k % 7:05d}" for k in i], object),
        context=rng.normal(size=(n, 3)).astype(np.float32),
        eligible=np.ones((n, 4), bool),
        action=rng.integers(0, 4, n),
        send_at=np.zeros(n),
        propensity=np.full(n, 0.25),
        policy=np.array(["bau"] * n, object),
        policy_version=np.array(["1"] * n, object),
        experiment=np.array([""] * n, object),
        arm=np.array([""] * n, object),
        cost=np.zeros(n),
        reward=rng.exponential(size=n),
    )


def test_a_log_digest_names_the_decisions_not_just_their_ids():
    """Two exports whose decision ids repeat are two datasets; the chunks a job reads the log in, and the
    reward a job gives it, do not change its name."""
    from dataclasses import replace

    from nba.log.records import LoggedBatch

    n = 50
    batch = _decisions(0, n)
    whole = jobs.LogDigest.of("sqlite:///a.db", batch)
    chunked = jobs.LogDigest("sqlite:///a.db", sketch=True)
    for part in (slice(0, 13), slice(13, 40), slice(40, n)):
        chunked.add(LoggedBatch(**{k: v[part] for k, v in vars(batch).items()}))
    assert chunked.tags() == whole and whole["dataset.rows"] == "50"
    assert jobs.LogDigest.of("sqlite:///a.db", replace(batch, reward=batch.reward * 2)) == whole
    for field, other in (
        ("action", (batch.action + 1) % 4),
        ("time", batch.time + 86_400.0),
        ("customer_id", np.roll(batch.customer_id, 1)),
        ("propensity", np.full(n, 0.5)),
    ):
        assert (
            jobs.LogDigest.of("sqlite:///a.db", replace(batch, **{field: other}))["dataset.digest"]
            != whole["dataset.digest"]
        ), field


def test_two_logs_sketches_tell_how_many_decisions_they_share():
    """The share of one log's decisions that are in another, from their sketches alone: exact on small logs,
    within a few points on large ones (20,000 decisions each, 512 hashes a sketch), 0 when they share none."""

    def sketch(*parts):
        d = jobs.LogDigest("sqlite:///x.db", sketch=True)
        for first, n in parts:
            d.add(_decisions(first, n))
        return d.sketch()

    assert len(sketch((0, 20_000)).hashes) == jobs.SKETCH_SIZE  # bounded, whatever the log's size
    # small logs: exact
    assert jobs.overlap(sketch((0, 300)), sketch((200, 100))) == 1.0
    assert jobs.overlap(sketch((0, 300)), sketch((250, 100))) == 0.5
    assert jobs.overlap(sketch((0, 300)), sketch((300, 100))) == 0.0
    # large logs: the estimate, in chunks or whole
    learned = sketch((0, 7_000), (7_000, 13_000))
    assert jobs.overlap(learned, sketch((0, 20_000))) == pytest.approx(1.0, abs=0.02)
    for first, share in ((15_000, 0.25), (10_000, 0.5), (19_000, 0.05)):
        assert jobs.overlap(learned, sketch((first, 20_000))) == pytest.approx(share, abs=0.08), first
    assert jobs.overlap(learned, sketch((20_000, 20_000))) == 0.0  # none shared: exactly none
    # the same decisions with other ids (another export) are other decisions
    assert jobs.overlap(learned, sketch((1_000_000, 5_000))) == 0.0
    # a sketch survives its round trip through the run's JSON artefact
    s = sketch((0, 5_000))
    back = jobs.LogSketch.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.rows == s.rows and np.array_equal(back.hashes, s.hashes)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_evaluate_reads_a_change_of_send_slot_over_its_base_through_the_opens(store):
    """With a base, the target that moves only the base's send slots (the quickstart's send_time over business
    as usual) gets its lift read through the opens too, of the exact lift's sign, logged on the run; a target
    that changes its messages keeps the paired lift of the estimator pipelines rank by."""
    from training.quickstart import BANDIT_PARAMS, SAFE

    train, evaluation = (f"sqlite:///{store['root'] / f'slot-{k}.db'}" for k in ("train", "eval"))
    jobs.simulate(train, decisions=8000, seed=0, purpose="tests/jobs/slot-train")
    jobs.simulate(evaluation, decisions=8000, seed=0, purpose="tests/jobs/slot-eval")
    bau = jobs.train("business_as_usual", source=train).version
    sto = jobs.train("send_time", source=train, params=BANDIT_PARAMS["send_time"], safe=SAFE).version
    before = _runs()
    with pytest.raises(jobs.JobError, match="^base: '3x' is not one of the policies evaluated"):
        jobs.evaluate(evaluation, [bau, sto], base="3x")
    assert _runs() == before
    ev = jobs.evaluate(evaluation, [bau, sto, "no_contact"], n_bootstrap=20, base=bau)
    label = {v: k for k in ev.estimates for v in (bau, sto) if k.endswith(f" v{v}")}
    assert ev.base == label[bau] and set(ev.slot_lifts) == {label[sto]}
    up = ev.evidence(label[sto])
    assert up is ev.slot_lifts[label[sto]] and up.estimator == "opens" and not up.unsupported
    exact = ev.truth[label[sto]] - ev.truth[label[bau]]
    assert exact > 0.05 and up.ci_low > 0  # better in truth, and the opens say so
    # no contact changes whom: the paired lift of the estimator pipelines rank by
    assert ev.evidence("no_contact") == ev.lift("no_contact", label[bau]) and jobs.RANK_BY == "mdr"
    assert ev.evidence("no_contact").estimator == jobs.RANK_BY
    run = mlflow.get_run(ev.run_id)
    key = jobs._metric_key(label[sto])
    assert run.data.metrics[f"{key}.lift_opens"] == up.value and run.data.tags["eval.base"] == label[bau]
    assert run.data.metrics[f"{key}.lift_opens.ci_low"] == up.ci_low
    with pytest.raises(ValueError, match="^base: "):
        dataclasses.replace(ev, base=None).evidence(label[sto])
    # nba promote without an A/B reads it too, for a challenger evaluated with the champion as its base
    registry.set_alias(registry.CHAMPION, bau)
    registry.set_alias(registry.CHALLENGER, sto)
    moved = jobs.promote()
    assert moved.promoted and "through the opens" in moved.reason and "lower bound clears 0" in moved.reason
    assert registry.alias_state(registry.CHAMPION).version == sto
    # the other way round (business as usual over send_time, its base now): the lower bound stays below 0
    back = jobs.evaluate(evaluation, [sto, bau], n_bootstrap=20, base=sto)
    assert back.slot_lifts[label[bau]].ci_high < 0
    registry.set_alias(registry.CHALLENGER, bau)
    kept = jobs.promote()
    assert not kept.promoted and "through the opens" in kept.reason and "does not clear 0" in kept.reason
    assert registry.alias_state(registry.CHAMPION).version == sto
    # a log whose messages nobody opened says nothing of the slots: a warning, and no lift through the opens
    silent = f"sqlite:///{store['root'] / 'slot-silent.db'}"
    jobs.simulate(silent, decisions=2000, seed=0, policy="no_contact", epsilon=0.0, holdout=0.0, purpose="tests/silent")
    said: list[str] = []
    quiet = jobs.evaluate(silent, [bau, sto], n_bootstrap=10, base=bau, say=said.append)
    assert quiet.base == label[bau] and not quiet.slot_lifts
    assert any("no message of this log was opened" in line for line in said), said


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_a_learner_evaluated_on_its_own_training_log_is_flagged_in_sample_and_not_promoted_on_it(
    store, saved_figures, tmp_path
):
    train_log, eval_log = (f"sqlite:///{store['root'] / f'in-sample-{k}.db'}" for k in ("train", "eval"))
    jobs.simulate(train_log, decisions=3000, purpose="tests/in-sample/train")
    jobs.simulate(eval_log, decisions=3000, purpose="tests/in-sample/eval")
    bau = jobs.train("business_as_usual", source=train_log)
    lints = jobs.train("lints", source=train_log)
    said: list[str] = []
    own = jobs.evaluate(train_log, [bau.version, lints.version], n_bootstrap=20, say=said.append)
    label = next(k for k in own.estimates if k.endswith(f" v{lints.version}"))
    base = next(k for k in own.estimates if k.endswith(f" v{bau.version}"))
    # the learner learned from this log; business as usual only ran on it
    assert jobs.IN_SAMPLE in own.flags[label] and jobs.IN_SAMPLE not in own.flags[base]
    assert any(f"{label}: " in s and "in_sample: it learned from 100% of these decisions" in s for s in said), said
    ranked = own.ranked()
    assert all(ranked.index(k) < ranked.index(label) for k in ranked if not own.flags[k])  # flagged: last
    # the ranking figure says what ranks (the lower bound) and draws the flagged version last, its flag named
    ((fig, _),) = [f for f in saved_figures if "ranked by" in (f[0].texts[0].get_text() if f[0].texts else "")]
    assert "ranked by the lower bound of mdr" in fig.texts[0].get_text().replace("\n", " ")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [f"{k} (in_sample)" if k == label else k for k in ranked]  # top to bottom, flag named
    assert registry.latest_evaluation(lints.version).metrics["flag.in_sample"] == 1.0
    # the same version reached otherwise (its logged model's URI, its model downloaded, that model's bundle
    # folder) is flagged too: the model names the run that trained it; a folder of no bundle is refused
    folder = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{registry.MODEL_NAME}/{lints.version}", dst_path=str(tmp_path / "m")
        )
    )
    refs = [f"models:/{registry.logged_model_id(lints.version)}", str(folder), str(folder / "artifacts" / "bundle")]
    other_ways = jobs.evaluate(train_log, refs, n_bootstrap=20)
    assert len(other_ways.flags) == 3 and all(jobs.IN_SAMPLE in f for f in other_ways.flags.values()), other_ways.flags
    assert set(other_ways.learned.values()) == {1.0}
    # the two folders' policy shares a label: each is named by its folder; the same target twice is refused
    assert f"lints (safe) ({folder})" in other_ways.estimates and f"lints (safe) ({refs[0]})" in other_ways.estimates
    with pytest.raises(jobs.JobError, match="^policy: '.*' is given twice"):
        jobs.evaluate(train_log, [str(folder), str(folder)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(jobs.JobError, match="^policy: '.*empty' is a folder but holds no bundle"):
        jobs.evaluate(train_log, [str(tmp_path / "empty")])
    registry.set_alias(registry.CHAMPION, bau.version)
    registry.set_alias(registry.CHALLENGER, lints.version)
    refused = jobs.promote()
    assert not refused.promoted and "evaluated on decisions it learned from" in refused.reason, refused.reason
    assert registry.alias_state(registry.CHAMPION).version == bau.version
    # on a log of its own the flag is gone, and the evaluation promote reads is that one
    other = jobs.evaluate(eval_log, [bau.version, lints.version, "business_as_usual"], n_bootstrap=20)
    assert not any(jobs.IN_SAMPLE in f for f in other.flags.values())
    # the rule by name decides as its registered version, and the run says so; the others decide as no other
    assert other.same_as("business_as_usual") == base and other.same_as(base) is None
    assert other.same_as(label) is None
    tags = mlflow.MlflowClient().get_run(other.run_id).data.tags
    assert tags["business_as_usual.same_decisions_as"] == base
    assert registry.latest_evaluation(lints.version).metrics["flag.in_sample"] == 0.0
    assert "learned from" not in jobs.promote().reason
    # studentized intervals on request: the same estimates, other intervals, said on the run
    stud = jobs.evaluate(eval_log, [bau.version, lints.version], n_bootstrap=20, interval="studentized")
    e, p = stud.estimates[base][jobs.RANK_BY], other.estimates[base][jobs.RANK_BY]
    assert e.value == p.value and (e.ci_low, e.ci_high) != (p.ci_low, p.ci_high)
    assert mlflow.get_run(stud.run_id).data.params["interval"] == stud.interval == "studentized"
    # and so is the paired lift a promotion reads: the stored evaluations pair as the returned estimates do
    held = stud.lift(label, base)
    assert (held.ci_low, held.ci_high) != pytest.approx(
        (other.lift(label, base).ci_low, other.lift(label, base).ci_high)
    )
    stored = registry.paired_lift(
        registry.latest_evaluation(lints.version), registry.latest_evaluation(bau.version), jobs.RANK_BY
    )
    assert (stored.value, stored.ci_low, stored.ci_high) == pytest.approx((held.value, held.ci_low, held.ci_high))
    # the marginal estimators weight on the grouping asked for (channel x content here), the others unchanged
    finer = jobs.evaluate(eval_log, [bau.version], n_bootstrap=20, groups="channel_content")
    f, o = finer.estimates[base], other.estimates[base]
    assert f["mdr"].value != o["mdr"].value and f["dr"].value == o["dr"].value
    assert mlflow.get_run(finer.run_id).data.params["groups"] == finer.groups == "channel_content"
    runs = _runs()
    with pytest.raises(jobs.JobError, match="^interval: unknown method 'bca'; valid: percentile, studentized"):
        jobs.evaluate(eval_log, [bau.version], interval="bca")
    with pytest.raises(jobs.JobError, match="^groups: unknown grouping 'segment'; valid: channel, channel_content"):
        jobs.evaluate(eval_log, [bau.version], groups="segment")
    assert _runs() == runs
    # from the training run's sketch alone (another digest), the training log reads as all learned from; a
    # sketch that is not one reads as none kept, and the same digest still as all
    with DecisionLog(train_log) as log:
        batch = log.read(jobs.reward_rule_for(train_log))
    named = jobs.LogDigest(train_log, sketch=True)
    named.add(batch)
    assert jobs.learned_share(lints.run_id, "another digest", named.sketch()) == pytest.approx(1.0)
    mlflow.MlflowClient().log_dict(lints.run_id, {"rows": "many"}, registry.SKETCH_ARTIFACT)
    assert jobs.learned_share(lints.run_id, "another digest", named.sketch()) == 0.0
    assert jobs.learned_share(lints.run_id, named.tags()["dataset.digest"], named.sketch()) == 1.0
    assert jobs.learned_share(bau.run_id, named.tags()["dataset.digest"], named.sketch()) == 0.0  # no learner
    # a version whose training run is gone from the store (deleted, then collected) learned from no log known
    gone = jobs.train("lints", source=train_log)
    mlflow.MlflowClient().delete_run(gone.run_id)
    exe = str(Path(sys.executable).with_name("mlflow"))
    gc = subprocess.run(
        [exe, "gc", "--backend-store-uri", store["uri"], "--run-ids", gone.run_id],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gc.returncode == 0, gc.stderr[-2000:]
    assert registry.learned_from(gone.run_id) is None
    assert jobs.learned_share(gone.run_id, named.tags()["dataset.digest"], named.sketch()) == 0.0


def test_train_online_logs_curves_and_plots(store, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    res = jobs.train("linucb", decisions=2000, register=False)
    client = mlflow.MlflowClient()
    history = client.get_metric_history(res.run_id, "cumulative_regret")
    assert len(history) == 2 and history[-1].step == 2000
    arts = {a.path for a in client.list_artifacts(res.run_id, "plots")}
    assert {"plots/learning_curve.png", "plots/channel_mix.png", "plots/send_hours.png"} <= arts
    assert not list((tmp_path / "tmp").iterdir())  # the folder they were drawn in is gone
    # given a folder, the figures stay there; an offline learner draws none, and leaves no empty folder
    jobs.train("linucb", decisions=2000, register=False, plots_dir=tmp_path / "online")
    drawn = {p.name for p in (tmp_path / "online").iterdir()}
    assert drawn == {"learning_curve.png", "channel_mix.png", "send_hours.png"}
    fqi = {"iterations": 1, "num_boost_round": 10, "min_data_in_leaf": 50, "min_support": 20}
    jobs.train("fqi", customers=60, params=fqi, register=False, plots_dir=tmp_path / "offline")
    assert not (tmp_path / "offline").exists()
    # LinUCB picks its best upper bound outright: what it took is its greedy choice
    metrics = client.get_run(res.run_id).data.metrics
    assert metrics["greedy_score"] == pytest.approx(metrics["normalised_score"])
    assert metrics["normalised_score"] == pytest.approx(res.metrics["normalised_score"])


def test_failed_job_is_marked_failed_and_moves_no_alias(store, monkeypatch):
    v = jobs.train("no_contact", decisions=1000).version
    registry.set_alias(registry.CHAMPION, v)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "promote", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        jobs.promote()
    last = mlflow.search_runs(
        search_all_experiments=True, output_format="list", max_results=1, order_by=["attributes.start_time DESC"]
    )[0]
    assert last.info.status == "FAILED" and last.data.tags["nba.job"] == "promote"
    assert registry.alias_state(registry.CHAMPION).version == v


def test_train_fqi_from_the_simulator(store):
    res = jobs.train(
        "fqi",
        params={"iterations": 2, "num_boost_round": 10, "min_data_in_leaf": 50, "min_support": 20},
        customers=60,
        register=False,
    )
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(res.run_id, "fqi_target_change")) == 2
    assert res.policy.booster is not None


TWO_STAGE_SMALL = {
    "num_boost_round": 10,
    "value_rounds": 10,
    "change_rounds": 10,
    "min_data_in_leaf": 50,
    "min_support": 20,
}


def test_train_two_stage_value_from_the_simulator(store):
    # two iterations: the second bootstraps the greedy value of the next state, organic purchases included
    res = jobs.train(
        "two_stage", params=TWO_STAGE_SMALL | {"iterations": 2, "average": 2}, customers=60, register=False
    )
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(res.run_id, "target_sd")) == 4
    assert mlflow.get_run(res.run_id).data.params["value_reward"] == "total"
    assert len(res.policy.futures) == 2 and res.policy.candidates.sum() > 1


def test_train_two_stage_value_from_a_decision_log(store, tmp_path):
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    jobs.simulate(url, decisions=3000, seed=5)
    res = jobs.train("two_stage", source=url, params=TWO_STAGE_SMALL)
    assert res.version and len(res.policy.futures) == 1
    batch = DecisionLog(url).read(jobs.sim_reward_rule())
    t = jobs.transitions_from_log(batch, 0.9)
    assert res.metrics["transitions"] == len(t["actions"]) > 0
    # each row's return is its reward plus gamma times the next row's return, down the same journey
    order = np.lexsort((batch.time, batch.customer_id))
    same = batch.customer_id[order][1:] == batch.customer_id[order][:-1]
    assert same.sum() == len(t["actions"])
    G = returns_to_go(batch.reward, batch.customer_id, batch.time, 0.9)
    np.testing.assert_allclose(G[order][:-1][same], batch.reward[order][:-1][same] + 0.9 * G[order][1:][same])
    assert np.all(t["day"] >= 0)


def test_train_the_funnel_learner_from_a_decision_log(store, tmp_path):
    url = f"sqlite:///{tmp_path / 'funnel.db'}"
    jobs.simulate(url, decisions=3000, seed=6)
    res = jobs.train("lgbm_funnel", source=url, params={"num_boost_round": 10, "min_data_in_leaf": 20}, register=False)
    policy = res.policy.learner  # in its conservative mode (test_log_trained_bandits_are_conservative)
    assert res.metrics["rows"] == 3000 and policy.fitted_on == 3000
    log = DecisionLog(url)
    batch = log.read(jobs.reward_rule_for(url))
    ev = log.funnel_events(batch, jobs.reward_rule_for(url).window_h)
    # it learnt from the log's own events: the opens, clicks and click-through conversions it holds
    np.testing.assert_array_equal(policy.events["opened"], ev.opened)
    np.testing.assert_array_equal(policy.events["converted"], ev.converted)
    assert 0 < ev.clicked.sum() < ev.opened.sum() < (batch.action > 0).sum()
    np.testing.assert_array_equal(policy.rewards, batch.reward)


def test_simulated_ab_then_promote_from_its_run(store, tmp_path):
    nc = jobs.train("no_contact", decisions=1000).version
    bau = jobs.train("business_as_usual", decisions=1000).version
    registry.set_alias(registry.CHAMPION, nc)
    registry.set_alias(registry.CHALLENGER, bau)
    before = _runs()
    with pytest.raises(jobs.JobError, match="guardrail 'x': metric: 'clicks' is not measured"):
        jobs.ab(guardrails=["x=clicks:1"])
    with pytest.raises(jobs.JobError, match="margin"):
        jobs.ab(guardrails=[{"name": "sends", "metric": "sent", "margin": -1}])
    assert _runs() == before
    lenient = ["opt-out rate=opted_out:0.05", "churn rate=churned:0.05"]
    res = jobs.ab(customers=1500, days=6, pre_days=2, seed=3, out=tmp_path / "ab", guardrails=lenient)
    # the simulator knows the true effect: the always-valid interval covers it
    assert res.ci_low <= res.true_effect <= res.ci_high
    assert res.report.exists() and (tmp_path / "ab" / "report.html").exists()
    assert [g.guardrail.name for g in res.guardrails] == ["opt-out rate", "churn rate"]
    assert all(g.passed for g in res.guardrails) and res.promote == (res.winner == "challenger")
    for g in res.guardrails:  # each always-valid bound covers the exact worsening
        assert g.bound >= res.true_worsening[g.guardrail.name]
    run = mlflow.get_run(res.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["ab.winner"] == res.winner and metrics["true_effect"] == res.true_effect
    assert tags["ab.promote"] == str(res.promote).lower() and tags["ab.reason"] == res.reason
    assert (tags["ab.champion_version"], tags["ab.challenger_version"]) == (nc, bau)
    assert metrics["guardrail.opt-out_rate.true_worsening"] == res.true_worsening["opt-out rate"]
    assert '"metric": "churned"' in run.data.params["guardrails"]
    promoted = jobs.promote(ab_run=res.run_id, predicted_lift=0.2, predicted_ci=(0.1, 0.3))
    assert promoted.promoted == res.promote
    assert registry.alias_state(registry.CHAMPION).version == (bau if res.promote else nc)
    last = mlflow.get_run(mlflow.last_active_run().info.run_id)
    assert last.data.metrics["predicted_lift"] == 0.2
    assert last.data.metrics["realised_lift"] == pytest.approx(res.diff / 6)
    with pytest.raises(jobs.JobError, match="ab_run"):
        jobs.promote(ab_run=registry.alias_state(registry.CHAMPION).run_id)


def test_a_failing_guardrail_blocks_the_promotion(store, tmp_path):
    """Business as usual against no contact with a guardrail of at most 0.1 message per customer: it sends
    far more, so whatever the reward says the verdict is no, and promote leaves the champion alone."""
    nc = jobs.train("no_contact", decisions=1000).version
    bau = jobs.train("business_as_usual", decisions=1000).version
    registry.set_alias(registry.CHAMPION, nc)
    registry.set_alias(registry.CHALLENGER, bau)
    res = jobs.ab(
        customers=1500,
        days=6,
        pre_days=0,
        seed=4,
        out=tmp_path / "ab",
        purpose=PURPOSE,
        guardrails=["sends per customer=sent:0.1"],
        truth=False,
    )
    (sends,) = res.guardrails
    assert sends.status == "breached" and sends.lower > 0.1
    assert not res.promote and "sends per customer breached" in res.reason
    assert res.true_effect is None and res.true_worsening is None  # no counterfactual runs asked for
    run = mlflow.get_run(res.run_id)
    assert run.data.tags["ab.failed_guardrails"] == "sends per customer" and "true_effect" not in run.data.metrics
    p = jobs.promote(ab_run=res.run_id)
    assert not p.promoted and "sends per customer" in p.reason
    assert registry.alias_state(registry.CHAMPION).version == nc
    # a verdict on other versions than the aliases' is no evidence
    registry.set_alias(registry.CHALLENGER, nc)
    registry.set_alias(registry.CHAMPION, bau)
    p = jobs.promote(ab_run=res.run_id)
    assert not p.promoted and "not champion" in p.reason


def test_train_offline_from_an_imported_log(store, tmp_path):
    """A log from elsewhere (CSV with the scenario's feature columns) trains a policy like a native one."""
    import csv

    from envs.scenario import Scenario
    from nba.log import DecisionLog
    from nba.log.importer import ColumnMapping, import_table

    sim_url = f"sqlite:///{tmp_path / 'sim.db'}"
    jobs.simulate(sim_url, decisions=2000, seed=5)
    batch = DecisionLog(sim_url).read(jobs.sim_reward_rule())
    names = Scenario.default().feature_spec.names
    path = tmp_path / "their-log.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "customer", "ts", "action", "p", "revenue"])
        for i in range(len(batch)):
            w.writerow(
                [
                    *batch.context[i].tolist(),
                    batch.customer_id[i],
                    batch.time[i],
                    int(batch.action[i]),
                    batch.propensity[i],
                    batch.reward[i],
                ]
            )
    url = f"sqlite:///{tmp_path / 'imported.db'}"
    n_actions = Scenario.default().action_space.n_actions
    mapping = ColumnMapping(
        context=names,
        action="action",
        propensity="p",
        n_actions=n_actions,
        time="ts",
        reward="revenue",
        customer_id="customer",
    )
    with DecisionLog(url) as log:
        assert import_table(log, path, mapping) == 2000
    res = jobs.train("lints", source=url)
    assert res.metrics["rows"] == 2000 and res.version
    # the same rows as the native log, so the same fit; its logger unknown, the conservative mode keeps
    # the log's own action frequencies where support is thin (the native log's: business as usual)
    native = jobs.train("lints", source=sim_url, register=False)
    X = batch.context[:50]
    np.testing.assert_allclose(
        res.policy.learner.probabilities(X, batch.eligible[:50]),
        native.policy.learner.probabilities(X, batch.eligible[:50]),
        atol=1e-9,
    )
    np.testing.assert_array_equal(res.policy.counts, native.policy.counts)
    assert res.policy.baseline_name == "estimate" and native.policy.baseline_name == "business_as_usual"


def test_ab_from_a_logged_experiment(store, tmp_path):
    """An experiment logged by the simulator, analysed from the decision log by the ab job."""
    from envs.experiment import run_experiment
    from envs.scenario import Scenario
    from nba.log import DecisionLog
    from nba.policies import create

    sc = Scenario.default()
    arms = {
        "champion": create("no_contact", sc.action_space),
        "challenger": create("business_as_usual", sc.action_space, tuple(sc.segments)),
    }
    url = f"sqlite:///{tmp_path / 'exp.db'}"
    with DecisionLog(url) as log:
        sim = run_experiment(sc, arms, n=1200, days=5, seed=7, experiment="spring", log=log, purpose=PURPOSE)
    before = _runs()
    with pytest.raises(jobs.JobError, match="experiment: no decisions of experiment 'autumn'"):
        jobs.ab(source=url, experiment="autumn", days=5)
    assert _runs() == before
    res = jobs.ab(source=url, experiment="spring", days=5, out=tmp_path / "report")
    assert res.true_effect is None and res.report.exists()
    # the log's analysis (nba's default reward rule) is the simulation's: the same per-customer totals
    assert res.winner in ("challenger", "champion", "none")
    assert res.diff == pytest.approx(sim.analyse("challenger").comparison.diff, abs=1e-6)
    # the guardrails a log can measure (opt-outs, sends), read from it, are the simulation's
    assert [g.guardrail.name for g in res.guardrails] == ["opt-out rate", "sends per customer"]
    for g in res.guardrails:
        m = g.guardrail.metric
        assert g.mean_treatment == pytest.approx(sim.metrics[m][sim.arm == "challenger"].mean())
        assert g.mean_control == pytest.approx(sim.metrics[m][sim.arm == "champion"].mean())
    assert not res.promote and "sends per customer cannot be measured" in res.reason  # no contact sends nothing
    assert mlflow.get_run(res.run_id).data.tags["dataset.uri"].endswith("exp.db")


def test_unreachable_or_empty_logs_fail_before_any_run(store, tmp_path):
    before = _runs()
    missing, empty = (f"sqlite:///{tmp_path / f'{k}.db'}" for k in ("missing", "empty"))
    DecisionLog(empty).close()  # a log with its tables and no decision
    for url, said in ((missing, "no SQLite database at"), (empty, "is empty")):
        for call in (
            lambda u: jobs.train("lints", source=u),
            lambda u: jobs.evaluate(u, ["no_contact"]),
            lambda u: jobs.ab(source=u),
        ):
            with pytest.raises(jobs.JobError, match=said):
                call(url)
    assert not (tmp_path / "missing.db").exists()  # a mistyped path is not created
    with pytest.raises(jobs.JobError, match="source: cannot open decision log"):
        jobs.train("lints", source="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert _runs() == before


def test_log_trained_bandits_are_conservative(store, tmp_path):
    """A bandit learnt from a simulated log is wrapped in SPIBB with the logger's base policy as its
    baseline, recorded on the run; safe=False trains the bare learner."""
    from nba.policies.linear import LinTS
    from nba.policies.safe import SPIBB

    url = f"sqlite:///{tmp_path / 'safe.db'}"
    jobs.simulate(url, decisions=2000, seed=3, purpose="test/training/jobs-safe")
    res = jobs.train("lints", source=url, register=False)
    assert isinstance(res.policy, SPIBB) and isinstance(res.policy.learner, LinTS)
    assert res.policy.baseline_name == "business_as_usual" and res.policy.counts.sum() == 2000
    params = mlflow.get_run(res.run_id).data.params
    assert params["safe"] == "spibb" and params["safe.baseline"] == "business_as_usual"
    bare = jobs.train("lints", source=url, register=False, safe=False)
    assert isinstance(bare.policy, LinTS) and mlflow.get_run(bare.run_id).data.params["safe"] == "off"
    # a learner by name is not a policy to evaluate: it needs training (spibb and send_time included)
    for name in ("lints", "spibb", "send_time"):
        with pytest.raises(jobs.JobError, match="needs no training"):
            jobs.resolve_target(name, jobs.load_scenario(None))


def test_nba_train_sets_the_conservative_mode_or_turns_it_off(store, tmp_path):
    """`nba train --safe`: its parameters (the quickstart's contacts=keep), 'off', or a bad one refused naming
    the field before the store is touched."""
    from typer.testing import CliRunner

    from cli.main import app

    url = f"sqlite:///{tmp_path / 'safe-cli.db'}"
    jobs.simulate(url, decisions=2000, seed=3, purpose="test/training/jobs-safe-cli")
    root = ["--root", str(store["root"])]

    def train(*extra: str):
        res = CliRunner().invoke(app, ["train", "--policy", "lints", "--source", url, "--no-register", *extra, *root])
        return res.exit_code, " ".join(res.output.split())

    before = _runs()
    for extra, said in (
        (["--safe", "contacts=sometimes"], "safe: contacts: expected one of ['free', 'keep', 'channel']"),
        (["--safe", "nmin=3"], "safe: no parameter 'nmin'; valid: n_min, contacts"),
        (["--safe", "off", "--safe", "n_min=3"], "safe: 'off' takes no parameters"),
        (["--safe", "n_min=-1"], "safe: n_min: must be >= 0, got -1"),
    ):
        code, out = train(*extra)
        assert code == 2 and said in out, out
    for policy, source, said in (
        ("lints", "simulator", "is for learning from a decision log"),
        ("fqi", url, "'fqi' has no conservative mode"),
        ("business_as_usual", url, "'business_as_usual' has no conservative mode"),
    ):
        res = CliRunner().invoke(app, ["train", "--policy", policy, "--source", source, "--safe", "n_min=3", *root])
        assert res.exit_code == 2 and said in " ".join(res.output.split()), res.output
    assert _runs() == before
    for extra, safe, contacts in (
        (["--safe", "contacts=keep", "--safe", "n_min=20"], "spibb", "keep"),
        ([], "spibb", "free"),
        (["--safe", "off"], "off", None),
    ):
        code, out = train(*extra)
        assert code == 0, out
        run = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1)[0]
        assert run.data.params["safe"] == safe and run.data.params.get("safe.contacts") == contacts
        if extra[:2] == ["--safe", "contacts=keep"]:
            assert run.data.params["safe.n_min"] == "20.0"
        assert "trained lints" in out


def test_evaluation_flags_unsupported_estimates_and_policies_worse_than_the_logger():
    from nba.ope import Estimate

    def est(value, low, high, unsupported=False):
        return {
            jobs.RANK_BY: Estimate(
                jobs.RANK_BY, value, low, high, 0.95, 100, 0.1, 50.0, 3.0, 0.0, unsupported=unsupported
            )
        }

    assert jobs.flags_of(est(1.0, 0.8, 1.2), logged=0.9) == ()
    assert jobs.flags_of(est(0.7, 0.6, 0.85), logged=0.9) == (jobs.BELOW_LOGGING,)
    assert jobs.flags_of(est(1.0, 0.8, 1.2, True), logged=0.9) == (jobs.UNSUPPORTED,)
    res = jobs.EvaluateResult(
        "r",
        {"a": est(0.7, 0.6, 0.85), "b": est(1.5, 0.1, 2.0, True), "c": est(1.0, 0.9, 1.1)},
        None,
        None,
        (0.9, 0.8, 1.0),
        {"a": (jobs.BELOW_LOGGING,), "b": (jobs.UNSUPPORTED,), "c": ()},
    )
    assert res.ranked()[0] == "c"  # the unflagged estimate first, whatever the flagged ones' values


# ----------------------------------------------------------------------------- a brand's log on its deployment
TELECOM = Path(__file__).resolve().parents[2] / "examples" / "telecom"
COLUMNS = dict(
    channel="channel",
    offer="offer",
    send_hour="send_hour",
    reward="reward",
    opted_out="opted_out",
    customer_id="customer_id",
    decision_id="decision_id",
    time="time",
)


@pytest.fixture(scope="module")
def telecom_log(tmp_path_factory):
    """100 customers over 4 days of the telecom example's log imported onto its deployment: the first three
    days with the propensities the operator logged, the last one without them (estimated at import). Small:
    evaluating policies over its 801 actions costs about 10 ms a decision."""
    import importlib.util

    from nba.deployment import Deployment
    from training.importing import import_command

    spec = importlib.util.spec_from_file_location("telecom_generate", TELECOM / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    root = tmp_path_factory.mktemp("telecom")
    deployment = Deployment.load(TELECOM / "deployment.toml")
    header, *rows = generate.generate(deployment, 100, 4, seed=0)  # day by day
    url = f"sqlite:///{root / 'log.db'}"
    logged = generate.write_csv([header, *rows[:300]], root / "logged.csv")
    import_command(logged, url, deployment=TELECOM / "deployment.toml", propensity="propensity", **COLUMNS)
    later = generate.write_csv([header, *rows[300:]], root / "later.csv")
    res = import_command(later, url, deployment=TELECOM / "deployment.toml", **COLUMNS)
    assert res.propensity_estimated and res.new_decisions == 100
    # another fortnight's export of the same shape (its decision ids repeat the first's): to evaluate on
    header, *rows = generate.generate(deployment, 100, 4, seed=1, start=date(2027, 4, 5))
    held_out = f"sqlite:///{root / 'held-out.db'}"
    logged = generate.write_csv([header, *rows[:300]], root / "held-out-logged.csv")
    import_command(logged, held_out, deployment=TELECOM / "deployment.toml", propensity="propensity", **COLUMNS)
    later = generate.write_csv([header, *rows[300:]], root / "held-out-later.csv")
    import_command(later, held_out, deployment=TELECOM / "deployment.toml", **COLUMNS)
    return {
        "url": url,
        "held_out": held_out,
        "deployment": deployment,
        "file": TELECOM / "deployment.toml",
        "root": root,
    }


@pytest.fixture(scope="module")
def trained(store, telecom_log):
    """linucb trained on the log with the deployment file given, lints on the deployment the log holds."""
    return {
        "linucb": jobs.train("linucb", source=telecom_log["url"], deployment_path=telecom_log["file"]),
        "lints": jobs.train("lints", source=telecom_log["url"]),
    }


def _copy_log(telecom_log, path: Path, deployment: dict | None) -> str:
    """A copy of the telecom log holding ``deployment`` (None: none, as logs imported before they kept it)."""
    import shutil
    import sqlite3

    shutil.copy(telecom_log["root"] / "log.db", path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'deployment'")
        if deployment is not None:
            conn.execute("INSERT INTO meta VALUES ('deployment', ?)", (json.dumps(deployment),))
    return f"sqlite:///{path}"


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_train_on_a_deployment_log_registers_a_bundle_that_carries_it(store, telecom_log, trained, tmp_path):
    """A brand's log imported onto its deployment trains a learner on the deployment's actions and
    features, with the file or with the deployment the log holds; the registered bundle carries the
    deployment, and nba.decide decides with it."""
    from nba.decide import decide
    from nba.serialization import bundle_digest, load_bundle

    d = telecom_log["deployment"]
    res = trained["linucb"]
    assert res.version and res.metrics["rows"] == 400
    assert res.policy.space == d.action_space() and res.policy.dim == d.features().dim  # 801 actions, 58 features
    assert res.policy.catalogue is not None  # offers scored by their features: a new offer needs no retraining
    for r, source in ((res, "file"), (trained["lints"], "log")):
        params = mlflow.get_run(r.run_id).data.params
        assert params["safe"] == "off (deployment)" and params["deployment_digest"] == d.digest
        assert params["deployment_from"] == source
        tags = mlflow.MlflowClient().get_model_version(registry.MODEL_NAME, r.version).tags
        assert tags[registry.DEPLOYMENT_TAG] == "telco-retention" and tags[registry.DEPLOYMENT_DIGEST_TAG] == d.digest
    files = (
        Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{registry.MODEL_NAME}/{res.version}", dst_path=str(tmp_path / "dl")
            )
        )
        / "artifacts"
        / "bundle"
    )
    assert mlflow.MlflowClient().get_model_version(registry.MODEL_NAME, res.version).tags[
        registry.DIGEST_TAG
    ] == bundle_digest(files)
    bundle = load_bundle(files)
    assert bundle.deployment is not None and bundle.deployment.digest == d.digest
    assert bundle.spec.names == d.features().names and bundle.rules == d.contact_rules()

    people = [
        d.check_attributes(p)
        for p in (
            {"plan_type": "prepaid", "tenure_days": 40, "sms_opt_in": True},
            {
                "plan_type": "postpaid",
                "tenure_days": 900,
                "monthly_revenue": 45,
                "days_to_contract_end": 20,
                "app_user": True,
                "whatsapp_opt_in": True,
                "loyalty_tier": "gold",
            },
            {"plan_type": "business", "tenure_days": 3000, "email_opt_in": False, "sms_opt_in": False},
            {"plan_type": "prepaid", "tenure_days": 5, "data_usage_gb": 12.5},
        )
    ]
    day = datetime(2027, 3, 26, 8, tzinfo=UTC).timestamp() / 3600.0  # the log's last day, 09:00 in Paris
    now = day + np.array([0.0, 3.0, 7.0, 11.0])  # hours since the epoch
    out = decide(bundle.deployment, bundle.policy, people, now=now, tz_offset=1.0, rng=np.random.default_rng(0))
    rows = np.arange(len(people))
    assert out.eligible[rows, out.action].all()
    np.testing.assert_array_equal(out.propensity, out.probabilities[rows, out.action])
    assert not out.probabilities[~out.eligible].any()
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0)
    # the loaded policy decides as the trained one did, to the bit
    np.testing.assert_array_equal(out.probabilities, res.policy.probabilities(out.context, out.eligible))


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_evaluate_and_promote_deployment_bundles_on_their_log(store, telecom_log, trained, tmp_path):
    """Registered deployment bundles evaluated off-policy on the brand's log, with the deployment's reward:
    no exact value, the estimated propensities said (result, warning, run and version tags, the table),
    the plots that make sense without a scenario; then promote decides on the tags as for scenario bundles."""
    from rich.console import Console
    from typer.testing import CliRunner

    from cli.jobs import _estimates_table
    from cli.main import app

    d, client = telecom_log["deployment"], mlflow.MlflowClient()
    linucb, lints = trained["linucb"].version, trained["lints"].version
    registry.set_alias(registry.CHAMPION, linucb)
    registry.set_alias(registry.CHALLENGER, lints)
    said: list[str] = []
    ev = jobs.evaluate(
        telecom_log["url"],
        ["@champion", "@challenger", "no_contact"],
        n_bootstrap=20,
        plots_dir=tmp_path / "plots",
        say=said.append,
    )
    assert set(ev.estimates) == {f"linucb v{linucb}", f"lints v{lints}", "no_contact"}
    assert ev.truth is None and ev.logging_truth is None and ev.deployment.digest == d.digest
    assert ev.propensity == jobs.PROPENSITY_ESTIMATED and ev.propensity_estimated_share == pytest.approx(0.25)
    assert any("propensity: estimated at import, not logged (25% of the decisions)" in s for s in said)
    assert ev.estimates["no_contact"]["ips"].value == 0.0  # no contact: no cost, no conversion in the window
    run = mlflow.get_run(ev.run_id)
    assert run.data.tags["eval.propensity"] == "estimated" and run.data.tags["eval.truth"].startswith("none")
    assert run.data.tags["eval.deployment_digest"] == d.digest
    assert run.data.metrics["propensity.estimated_share"] == pytest.approx(0.25)
    assert not [k for k in run.data.metrics if k.endswith("true_value")]
    plots = {Path(f.path).name for f in client.list_artifacts(ev.run_id, "plots")}
    assert plots == {"ope_intervals.png", "ope_ranking.png", "channel_mix.png"}  # no segments: no send-hour maps
    evals = {v: registry.latest_evaluation(v) for v in (linucb, lints)}
    for e in evals.values():
        assert e.propensity == "estimated" and e.metrics[registry.ESTIMATED_SHARE] == pytest.approx(0.25)
        child = mlflow.get_run(e.run_id)  # the version's evaluation, nested in the evaluate run
        assert child.data.tags["mlflow.parentRunId"] == ev.run_id
        assert child.data.tags["eval.deployment_digest"] == d.digest
        assert e.dataset == evals[linucb].dataset == run.data.tags["dataset.digest"]
        assert {"dr", "dr.ci_low", "mdr.ci_low", "flag.unsupported", "flag.below_logging"} <= set(e.metrics)
        assert "true_value" not in e.metrics
        described = client.get_model_version(registry.MODEL_NAME, e.version).description
        assert "propensities estimated at import" in described and f"deployment {d.name}" in described
    table = Console(record=True, width=150)
    table.print(_estimates_table(ev))
    text = " ".join(table.export_text().split())
    assert "true value: none, a brand's log has no simulator behind it" in text
    assert "propensity: estimated at import for 25% of the decisions" in text
    # both learned from this very log: flagged in-sample, and promote will not act on it
    assert all(jobs.IN_SAMPLE in ev.flags[label] for label in ev.estimates if label != "no_contact")
    refused = jobs.promote()
    assert not refused.promoted and "evaluated on decisions it learned from" in refused.reason
    # a log that holds part of what they learned from (its first three days, imported alone: another
    # digest) is in-sample too, from the training run's sketch
    from training.importing import import_command

    part = f"sqlite:///{telecom_log['root'] / 'part.db'}"
    first_days = telecom_log["root"] / "logged.csv"
    import_command(first_days, part, deployment=telecom_log["file"], propensity="propensity", **COLUMNS)
    said.clear()
    ev_part = jobs.evaluate(part, ["@challenger"], n_bootstrap=20, say=said.append)
    assert mlflow.get_run(ev_part.run_id).data.tags["dataset.digest"] != run.data.tags["dataset.digest"]
    assert jobs.IN_SAMPLE in ev_part.flags[f"lints v{lints}"]
    assert any("in_sample: it learned from 100% of these decisions" in s for s in said), said

    # on a log of its own (another export, its ids the same): no longer in-sample
    ev = jobs.evaluate(telecom_log["held_out"], ["@champion", "@challenger"], n_bootstrap=20)
    assert not any(jobs.IN_SAMPLE in f for f in ev.flags.values()) and ev.propensity == jobs.PROPENSITY_ESTIMATED
    evals = {v: registry.latest_evaluation(v) for v in (linucb, lints)}
    assert evals[lints].dataset == evals[linucb].dataset != run.data.tags["dataset.digest"]  # two datasets
    result = jobs.promote()  # as for scenario bundles: the challenger's paired dr lift over the champion
    paired = registry.paired_lift(evals[lints], evals[linucb], "dr")
    assert paired is not None and "paired dr lift" in result.reason
    assert result.promoted == (paired.ci_low > 0 and not paired.unsupported)
    assert registry.alias_state(registry.CHAMPION).version == (lints if result.promoted else linucb)
    promotion = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        max_results=1,
        filter_string="tags.`nba.job` = 'promote'",
        order_by=["attributes.start_time DESC"],
    )
    assert promotion[0].data.tags["promotion.propensity"] == "estimated"
    # nba promote the same, on the other estimator: MDR's metrics
    registry.set_alias(registry.CHAMPION, linucb)
    res = CliRunner().invoke(app, ["promote", "--metric", "mdr", "--root", str(store["root"])])
    assert res.exit_code == 0, res.output
    mdr = registry.paired_lift(evals[lints], evals[linucb], "mdr")
    moved = mdr.ci_low > 0 and not mdr.unsupported
    assert ("moved" if moved else "unchanged") in res.output
    assert "rests on propensities estimated at import" in " ".join(res.output.split())
    assert registry.alias_state(registry.CHAMPION).version == (lints if moved else linucb)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_a_deployment_log_is_refused_on_another_world_before_any_run(store, telecom_log, trained, tmp_path):
    from nba.policies import SEGMENTED, create
    from nba.serialization import save_bundle

    url, file = telecom_log["url"], telecom_log["file"]
    scenario_log = f"sqlite:///{tmp_path / 'scenario.db'}"
    jobs.simulate(scenario_log, decisions=1000, seed=0)
    scenario = jobs.load_scenario(None)
    folder = save_bundle(jobs.bundle_of(create("uniform_random", scenario.action_space), scenario), tmp_path / "b")
    before = _runs()
    # the same features and actions, another digest (a channel's cost changed): not the file its decisions were on
    text = file.read_text()
    assert "cost = 0.02\n" in text
    other = tmp_path / "other.toml"
    other.write_text(text.replace("cost = 0.02\n", "cost = 0.03\n", 1))
    with pytest.raises(jobs.JobError, match="^deployment: .*another deployment"):
        jobs.train("linucb", source=url, deployment_path=other)
    # the offers in another order: another action space (and another digest)
    data = telecom_log["deployment"].to_dict()
    data["offers"] = dict(reversed(data["offers"].items()))
    shuffled = tmp_path / "shuffled.yaml"
    shuffled.write_text(json.dumps(data))  # JSON is YAML
    from nba.deployment import Deployment

    assert Deployment.load(shuffled).action_space() != telecom_log["deployment"].action_space()
    with pytest.raises(jobs.JobError, match="^deployment: the log's action space"):
        jobs.train("linucb", source=url, deployment_path=shuffled)
    # a log of the scenario on the deployment
    with pytest.raises(jobs.JobError, match="^deployment: the log's features"):
        jobs.train("linucb", source=scenario_log, deployment_path=file)
    # a log imported before logs kept their deployment needs its file; one whose stored deployment is not
    # the file's is refused, naming both
    older = _copy_log(telecom_log, tmp_path / "older.db", None)
    with pytest.raises(jobs.JobError, match="^source: .*made on a deployment .*: give its file"):
        jobs.train("linucb", source=older)
    dearer = Deployment.load(other).to_dict()
    with pytest.raises(
        jobs.JobError,
        match="^deployment: the log's decisions were made on another deployment: it holds 'telco-retention'",
    ):
        jobs.train("linucb", source=_copy_log(telecom_log, tmp_path / "odd.db", dearer), deployment_path=file)
    # rule-based policies follow the scenario's segments, with the file or without
    for name in SEGMENTED:
        with pytest.raises(jobs.JobError, match=f"^policy: '{name}' reads the scenario's segments"):
            jobs.train(name, source=url, deployment_path=file)
    with pytest.raises(jobs.JobError, match="^policy: 'business_as_usual' reads the scenario's segments"):
        jobs.train("business_as_usual", source=url)
    with pytest.raises(jobs.JobError, match="^source: a deployment is trained on its own decision log"):
        jobs.train("linucb", deployment_path=file)
    with pytest.raises(jobs.JobError, match="^deployment: no such file"):
        jobs.train("linucb", source=url, deployment_path=tmp_path / "missing.toml")
    with pytest.raises(jobs.JobError, match="^safe: "):
        jobs.train("linucb", source=url, deployment_path=file, safe={"n_min": 5})
    with pytest.raises(jobs.JobError, match="^scenario: not with a deployment"):
        jobs.train(
            "linucb",
            source=url,
            scenario_path=str(Path(jobs.__file__).parents[1] / "envs" / "scenarios" / "default.toml"),
        )
    # evaluation: trained policies on the log's actions and features, or the two that need no training
    version = trained["lints"].version
    for target, message in (
        ("linucb", r"^policy: 'linucb' is a learner that has learned nothing yet: train it on the log first"),
        ("send_time", r"^policy: 'send_time' is a learner"),
        ("business_as_usual", r"^policy: 'business_as_usual' reads the scenario's segments"),
        (
            str(folder),
            r"^policy: '.*' \(uniform_random\) decides over 225 actions reading \d+ features, the "
            r"scenario's, not the 801 actions and 58 features of the log's deployment 'telco-retention'",
        ),
        (f"models:/{registry.MODEL_NAME}/999", r"^policy: no registered version 'models:/nba-policy/999'"),
        ("magic", r"^policy: 'magic' is not @alias.*no_contact, uniform_random"),
    ):
        with pytest.raises(jobs.JobError, match=message):
            jobs.evaluate(url, [target])
    with pytest.raises(jobs.JobError, match="^scenario: the log holds the decisions of the deployment"):
        jobs.evaluate(
            url, [version], scenario_path=str(Path(jobs.__file__).parents[1] / "envs" / "scenarios" / "default.toml")
        )
    with pytest.raises(
        jobs.JobError, match=f"^policy: '{version}' decides on the deployment 'telco-retention', not on the scenario"
    ):
        jobs.evaluate(scenario_log, [version])
    assert _runs() == before


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the path does not depend on the store
def test_nba_train_and_evaluate_find_the_deployment_in_the_log(store, telecom_log):
    from typer.testing import CliRunner

    from cli.main import app

    root = ["--root", str(store["root"])]
    before = _runs()
    for extra in (["--deployment", str(telecom_log["file"])], []):
        res = CliRunner().invoke(
            app, ["train", "--policy", "business_as_usual", "--source", telecom_log["url"], *extra, *root]
        )
        said = " ".join(res.output.split())  # the console wraps long lines
        assert res.exit_code == 2 and "policy: 'business_as_usual' reads the scenario's segments" in said, res.output
    res = CliRunner().invoke(app, ["evaluate", "--policy", "lints", "--log", telecom_log["url"], *root])
    assert res.exit_code == 2 and "is a learner that has learned nothing yet" in " ".join(res.output.split())
    res = CliRunner().invoke(
        app, ["train", "--policy", "lints", "--source", telecom_log["url"], "--challenger", "--no-register", *root]
    )
    assert res.exit_code == 2 and "challenger: only a registered version" in res.output
    assert _runs() == before
    res = CliRunner().invoke(app, ["train", "--policy", "lints", "--source", telecom_log["url"], "--challenger", *root])
    assert res.exit_code == 0 and "trained lints: rows 400" in res.output, res.output
    said = " ".join(res.output.split())
    assert "train lints" in said and " 1/1 " in said  # the bar counts the log's batches, and fills
    assert jobs.log_steps(telecom_log["url"]) == 1 and jobs.log_steps("sqlite:////no/such/dir/x.db") == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "LOG_CHUNK", 150)
        assert jobs.log_steps(telecom_log["url"]) == 3  # 400 decisions: 150 + 150 + 100
    assert said.endswith(f"registered version {registry.alias_state(registry.CHALLENGER).version} (@challenger)")


def test_a_deployment_learner_scores_offers_by_their_features_unless_asked_not_to():
    from nba.deployment import Deployment

    d = Deployment.load(TELECOM / "deployment.toml")
    assert jobs.build_deployment_policy("lints", d).catalogue is not None
    assert jobs.build_deployment_policy("linucb", d, {"catalogue": "index"}).catalogue is None
    with pytest.raises(jobs.JobError, match="^param: catalogue must be 'features' or 'index'"):
        jobs.build_deployment_policy("linucb", d, {"catalogue": "offers"})
    with pytest.raises(jobs.JobError, match="^param: catalogue is a parameter of linucb, lints only"):
        jobs.build_deployment_policy("lgbm_squarecb", d, {"catalogue": "index"})


def test_a_label_becomes_a_file_stem_that_names_it():
    assert jobs._file_stem("lgbm_funnel (safe) v10") == "lgbm_funnel_safe_v10"
    assert jobs._file_stem("@champion") == "champion"
    assert jobs._file_stem("my offer/model v2") == "my_offer_model_v2"
    assert jobs._file_stem("(( ))") == "unnamed"
