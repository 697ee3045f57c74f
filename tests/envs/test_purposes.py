"""Independent data: the (seed, purpose) pairs of the quickstart, the benches and the tests share no stream.

Every pipeline names the purposes of its simulated customers (``purpose="..."`` literals, or module
constants whose name contains ``PURPOSE`` or names one of a bench's stages). This test reads them
all from the sources, checks that no two modules claim the same purpose name (two pipelines would
then meet the same customers), that the keys of their first rows at seeds 0-9 are all distinct, and
that no pipeline derives data from ``seed + k`` (the overlap :mod:`envs.random` removed: row ``i`` of
seed ``s`` used to be row ``i - 1`` of seed ``s + 1``).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from envs.random import GYM, stream_keys

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for d in ("envs", "training", "bench", "tests", "nba", "serving")
    for p in sorted((ROOT / d).rglob("*.py"))
    if p != Path(__file__).resolve()
]
STAGE_NAMES = re.compile(r"PURPOSE|^(LOG|VALIDATION|HELD_OUT|TRAIN|EVAL|BLIND)(_[A-Z]+)?$")


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def declared_purposes() -> dict[str, set[str]]:
    """purpose name -> the modules (paths relative to the repository) that use it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "purpose" and isinstance(node.value, ast.Constant):
                found[node.value.value].add(rel)
            elif isinstance(node, ast.Assign) and node.col_offset == 0:
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                names += [
                    e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)
                ]
                if any(STAGE_NAMES.search(n) for n in names):
                    for s in _strings(node.value):
                        found[s].add(rel)
    # the purposes a function passes on to envs (policy_rng(seed, "x"), Streams.of(seed, n, "x")) are
    # literals too
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r'(?:policy_rng\(\w+, |Streams\.of\([^,]+, [^,]+, )"([^"]+)"', text):
            found[m.group(1)].add(str(path.relative_to(ROOT)))
    return found


def test_the_pipelines_declare_their_purposes():
    found = declared_purposes()
    for name in (
        "quickstart/train-log",
        "quickstart/eval-log",
        "quickstart/journeys",
        "journey/log",
        "journey/validation",
        "journey/held-out",
        "bench/policies",
        "test/envs/rollout",
    ):
        assert name in found, f"purpose {name!r} not found in the sources"


def test_no_two_modules_claim_one_purpose():
    shared = {p: sorted(m) for p, m in declared_purposes().items() if len(m) > 1 and p != GYM}
    assert not shared, f"purposes used by several modules (their customers would be the same): {shared}"


def test_their_streams_share_no_key():
    purposes = sorted(declared_purposes())
    keys = np.concatenate([stream_keys(seed, 5_000, p) for p in purposes for seed in range(10)])
    assert np.unique(keys).size == keys.size


def _is_seed(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "seed") or (
        isinstance(node, ast.Attribute) and node.attr == "seed"
    )


def test_no_pipeline_derives_data_from_seed_plus_k():
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        # gymnasium's own convention, checked where the envs are tested: env.reset(seed=seed + i)
        gym_resets = {
            id(k.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "reset"
            for k in n.keywords
            if k.arg == "seed"
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Add)
                and _is_seed(node.left)
                and id(node) not in gym_resets
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"seed + k: use a purpose of its own instead ({offenders})"
