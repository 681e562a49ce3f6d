"""The mux warm-up as its own cached pipeline stage, on a tiny checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
from conftest import GLUE_DIR as DATA  # noqa: E402

from autoprumux import PruMuxPipeline, Recipe
from autoprumux.config import MuxShape
from autoprumux.errors import ConfigError

RECIPE = Recipe(
    max_train_examples=64,
    batch_size=16,
    max_seq_len=32,
    finetune_steps=2,
    mux_warmup_steps=3,
    mux_finetune_steps=2,
    warmup_corpus_size=64,
    recovery_steps=2,
    prune_stages=1,
    importance_examples=16,
)


def pipe(tiny_checkpoint, cache, task="sst2", recipe=RECIPE, **kw) -> PruMuxPipeline:
    return PruMuxPipeline(
        task=task, model=tiny_checkpoint, recipe=recipe, data_dir=str(DATA), cache_dir=cache, **kw
    )


def test_warmup_is_cached_and_shared_across_tasks(tiny_checkpoint, tmp_path):
    p = pipe(tiny_checkpoint, tmp_path)
    entry, meta = p.mux_warmup(2)
    assert not meta["cache_hit"] and meta["warmup"]["steps"] == 3 and meta["warmup"]["seconds"] > 0
    # a new pipeline, same recipe: no retraining
    entry2, meta2 = pipe(tiny_checkpoint, tmp_path).mux_warmup(2)
    assert meta2["cache_hit"] and entry2 == entry
    # another task reuses the same warm-up (the default corpus is the shared tasks' text)
    entry3, meta3 = pipe(tiny_checkpoint, tmp_path, task="cola").mux_warmup(2)
    assert meta3["cache_hit"] and entry3 == entry
    # and the task's mux model starts from it
    p.mux_model(MuxShape(2))
    assert len(list((tmp_path / "warmup").iterdir())) == 1


def test_warmup_cache_invalidated_by_recipe_n_and_variant(tiny_checkpoint, tmp_path):
    e1, _ = pipe(tiny_checkpoint, tmp_path).mux_warmup(2)
    e2, m2 = pipe(tiny_checkpoint, tmp_path, recipe=replace(RECIPE, mux_warmup_steps=4)).mux_warmup(
        2
    )
    e3, m3 = pipe(tiny_checkpoint, tmp_path).mux_warmup(4)
    e4, m4 = pipe(tiny_checkpoint, tmp_path, mux_variant="orthogonal").mux_warmup(2)
    assert len({e1, e2, e3, e4}) == 4
    assert not (m2["cache_hit"] or m3["cache_hit"] or m4["cache_hit"])


def test_warm_start_from_smaller_n_and_hidden_distillation_options(tiny_checkpoint, tmp_path):
    from autoprumux.models import MuxSequenceClassifier

    r = replace(RECIPE, warmup_from_smaller=True, warmup_hidden_distill=1.0, mux_pooling="mean")
    p = pipe(tiny_checkpoint, tmp_path, recipe=r)
    e4, m4 = p.mux_warmup(4)
    assert m4["started_from_n"] == 2 and "hidden_distill_loss" in m4["warmup"]
    e2, m2 = p.mux_warmup(2)  # built on the way, as its own cache entry
    assert m2["cache_hit"] and m2["started_from_n"] is None
    w2 = MuxSequenceClassifier.load(e2 / "model")
    w4 = MuxSequenceClassifier.load(e4 / "model")
    assert w4.index_embeddings.weight.shape[0] == 5 and w2.index_embeddings.weight.shape[0] == 3
    # the N=4 entry differs from a cold start of the same recipe
    cold, _ = pipe(
        tiny_checkpoint, tmp_path, recipe=replace(r, warmup_from_smaller=False)
    ).mux_warmup(4)
    assert cold != e4
    m = p.mux_model(MuxShape(2))
    assert m.mux_config.pooling == "mean"
    with pytest.raises(ConfigError, match="mux_pooling"):
        replace(RECIPE, mux_pooling="max")


def test_warmup_corpus_from_a_text_file(tiny_checkpoint, tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(f"sentence number {i} is here ." for i in range(40)) + "\n\n")
    p = pipe(tiny_checkpoint, tmp_path, warmup_corpus=str(f))
    assert len(p.warmup_sentences()) == 40
    with pytest.raises(ConfigError, match="nope.txt"):
        pipe(tiny_checkpoint, tmp_path, warmup_corpus=str(tmp_path / "nope.txt")).warmup_sentences()
    with pytest.raises(ConfigError, match="N >= 2"):
        p.mux_warmup(1)


def test_killed_warmup_leaves_no_entry_and_restarts_cleanly(tiny_checkpoint, tmp_path):
    script = textwrap.dedent(
        f"""
        from dataclasses import replace
        from autoprumux import PruMuxPipeline, Recipe
        r = Recipe(max_train_examples=64, batch_size=16, max_seq_len=32, mux_warmup_steps=600,
                   warmup_corpus_size=64)
        PruMuxPipeline(task="sst2", model={tiny_checkpoint!r}, recipe=r, data_dir={str(DATA)!r},
                       cache_dir={str(tmp_path)!r}).mux_warmup(2)
        """
    )
    env = {**os.environ, "AUTOPRUMUX_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "warmup").glob(".tmp-*")) and time.time() < deadline:
            assert proc.poll() is None, "warm-up finished or failed before it could be killed"
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any((d / "COMPLETE").exists() for d in (tmp_path / "warmup").iterdir())
    assert list((tmp_path / "warmup").glob(".tmp-*")), (
        "the killed writer's temp dir should be there"
    )
    # the same warm-up again: the dead writer's leftovers are removed, the entry completes
    r = subprocess.run([sys.executable, "-c", script], env=env, timeout=600)
    assert r.returncode == 0
    entries = list((tmp_path / "warmup").iterdir())
    assert len(entries) == 1 and (entries[0] / "COMPLETE").exists()


def test_warmup_command_builds_then_hits(tiny_checkpoint, tmp_path):
    env = {**os.environ, "AUTOPRUMUX_PROGRESS": "0", "AUTOPRUMUX_CACHE": str(tmp_path / "c")}
    cmd = [
        sys.executable,
        "-m",
        "autoprumux.cli",
        "warmup",
        "--mux",
        "2",
        "3",
        "--model",
        tiny_checkpoint,
        "--data-dir",
        str(DATA),
        "--mux-warmup-steps",
        "2",
        "--max-seq-len",
        "32",
        "--batch-size",
        "12",
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("built") == 2
    # each width's accuracy-against-steps curve (2 steps: one point per step)
    assert first.stdout.count("retrieval accuracy by step  1:") == 2, first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stdout.count("hit") == 2
    bad = subprocess.run([*cmd[:5], "1"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "N >= 2" in bad.stderr and "Traceback" not in bad.stderr


def test_baseline_shorter_than_mux_finetune_is_warned(tiny_checkpoint, tmp_path, caplog):
    """A baseline fine-tuned for fewer steps than the N > 1 model understates its loss: warned."""
    short = replace(RECIPE, finetune_steps=1, mux_finetune_steps=2, mux_warmup_steps=0)
    p = pipe(tiny_checkpoint, tmp_path, recipe=short)
    with caplog.at_level("WARNING", logger="autoprumux"):
        p.mux_model(MuxShape(2))
        p.mux_model(
            MuxShape(2)
        )  # cached now; a search asks once per trial: warned once per pipeline
    assert "finetune_steps=1" in caplog.text and "mux_finetune_steps=2" in caplog.text
    assert caplog.text.count("understated") == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="autoprumux"):
        pipe(tiny_checkpoint, tmp_path, recipe=replace(short, finetune_steps=2)).mux_model(
            MuxShape(2)
        )
    assert "understated" not in caplog.text
