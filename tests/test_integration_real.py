"""Integration: the real packaged all-MiniLM-L6-v2 on a slice of the real SST-2 data."""

from __future__ import annotations

import pytest
from conftest import GLUE_DIR as DATA  # noqa: E402

from autoprumux import Candidate, MuxSequenceClassifier, PruMuxPipeline, Recipe, ThroughputConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    recipe = Recipe(
        max_train_examples=2000,
        warmup_corpus_size=2000,  # 20 warm-up steps read 640 sentences: little to tokenise
        finetune_steps=80,
        mux_warmup_steps=20,
        mux_finetune_steps=20,
        recovery_steps=10,
        prune_stages=1,
        importance_examples=32,
    )
    pipe = PruMuxPipeline(
        task="sst2", recipe=recipe, data_dir=str(DATA), cache_dir=tmp_path_factory.mktemp("cache")
    )
    # a slice of the dev set: a multiplexed model is scored over 5 pairings of it, several times
    pipe.dev_items = pipe.dev_items[:320]
    return pipe


def test_real_baseline_well_above_chance_and_cached(pipe):
    base = pipe.baseline()
    acc = pipe.dev_metrics(base)["accuracy"]
    assert acc >= 75.0, acc
    # a second pipeline with the same recipe reuses the cached baseline (no retraining)
    again = PruMuxPipeline(
        task="sst2", recipe=pipe.recipe, data_dir=str(DATA), cache_dir=pipe.cache.root
    )
    assert again.cache.has("baseline", again.entry_key())
    assert pipe.dev_metrics(again.baseline())["accuracy"] == acc


def test_real_pruned_multiplexed_candidate_trains_and_evaluates(pipe, tmp_path):
    tp = ThroughputConfig(batch_size=8, seq_len=32, repeats=2, warmup=1)
    ev = pipe.evaluate(Candidate(sparsity=0.5, mux=2), throughput=tp)
    cand = ev.candidate
    assert cand.n == 2
    assert abs(cand.sparsity - 0.5) <= 0.02
    assert 0.0 <= cand.accuracy <= 100.0
    assert ev.accuracy_loss == pytest.approx(ev.baseline.metric - cand.metric)
    assert cand.throughput > 0 and ev.ideal_speedup > 2.5
    # the compressed model saves and loads back with the same dev accuracy
    model = pipe.candidate(Candidate(sparsity=0.5, mux=2))
    model.save(tmp_path / "m")
    loaded = MuxSequenceClassifier.load(tmp_path / "m")
    assert pipe.dev_metrics(loaded)["accuracy"] == pytest.approx(cand.accuracy)
