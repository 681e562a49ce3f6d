"""Knowing when the baseline is not worth compressing: max_seq_len from the data when unset (a
set one wins), the baseline beside the dev set's majority rate and noise, a loss within noise
reported as such, and a search refusing a baseline at the majority rate without --force."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from test_search_samplers import ReplayEvaluator, replay_settings

from autoprumux.cli import format_table, main
from autoprumux.config import Recipe
from autoprumux.data import DataSource
from autoprumux.errors import ConfigError
from autoprumux.evaluation import Evaluation, Measured, ThroughputConfig, dev_noise
from autoprumux.pipeline._baseline import COVERED_SHARE, covering_length
from autoprumux.search import Searcher, SearchSpace

# ---- max_seq_len from the data -----------------------------------------------------------------


def test_the_covering_length_is_the_shortest_multiple_of_8_holding_the_share():
    lengths = list(range(1, 101))  # 99% of them are at most 99 tokens long
    assert covering_length(lengths, 512) == 104
    assert covering_length(lengths, 64) == 64  # at most the model's positions
    assert covering_length([3] * 50, 512) == 8  # never below the recipe's least
    assert covering_length([10] * 99 + [400], 512) == 16  # the longest 1% do not count


def lengths_data(root: Path, *, pair: bool) -> DataSource:
    """400 rows: all 3-20 words long but two of 90 words (a tail the share leaves out)."""
    rng = random.Random(0)
    lines = ["text,text_pair,label" if pair else "text,label"]
    for i in range(400):
        words = 90 if i in (7, 207) else rng.randint(3, 20)
        text = " ".join(
            rng.choice(["good", "plot", "scene", "actor", "music"]) for _ in range(words)
        )
        first, second = (text[: len(text) // 2], text[len(text) // 2 :]) if pair else (text, None)
        label = "pos" if i % 2 else "neg"
        lines.append(f"{first},{second},{label}" if pair else f"{first},{label}")
    path = root / ("pairs.csv" if pair else "texts.csv")
    path.write_text("\n".join(lines) + "\n")
    return DataSource(path)


@pytest.mark.parametrize("pair", [False, True])
def test_an_unset_max_seq_len_covers_the_share_of_training_examples(
    tmp_path, tiny_checkpoint, pair
):
    from autoprumux.pipeline import PruMuxPipeline

    pipe = PruMuxPipeline(
        data=lengths_data(tmp_path, pair=pair),
        model=tiny_checkpoint,
        recipe=Recipe(batch_size=8),
        cache_dir=tmp_path / "cache",
    )
    train = pipe.data.train
    whole = pipe.tokenizer([e.text_a for e in train], [e.text_b for e in train] if pair else None)[
        "input_ids"
    ]
    lengths = [len(ids) for ids in whole]
    got = pipe.recipe.max_seq_len
    assert got % 8 == 0 and got < max(lengths)  # the long tail does not set it
    assert sum(n <= got for n in lengths) >= COVERED_SHARE * len(lengths)
    assert sum(n <= got - 8 for n in lengths) < COVERED_SHARE * len(lengths)  # the shortest
    assert pipe.entry_key()["max_seq_len"] == got  # cache keys hold the resolved value
    assert max(len(e.input_ids) for e in pipe.train_items) <= got
    assert f"max_seq_len {got} (from the data" in pipe.max_seq_len_note


def test_a_set_max_seq_len_wins(tmp_path, tiny_checkpoint):
    from autoprumux.pipeline import PruMuxPipeline

    pipe = PruMuxPipeline(
        data=lengths_data(tmp_path, pair=False),
        model=tiny_checkpoint,
        recipe=Recipe(batch_size=8, max_seq_len=96),
        cache_dir=tmp_path / "cache",
    )
    assert pipe.recipe.max_seq_len == 96 and pipe.entry_key()["max_seq_len"] == 96
    assert max(len(e.input_ids) for e in pipe.train_items) > 64  # the tail kept up to 96
    assert pipe.max_seq_len_note == "max_seq_len 96 (as set)"


# ---- the baseline beside the majority rate and the noise ---------------------------------------


def test_the_noise_is_the_binomial_standard_error_and_the_majority_rate():
    noise = dev_noise([0] * 60 + [1] * 40, accuracy=80.0)
    assert noise.examples == 100 and noise.majority == pytest.approx(60.0)
    assert noise.standard_error == pytest.approx(4.0)  # sqrt(0.8 * 0.2 / 100) in points
    assert not noise.near_majority
    assert noise.within_noise(7.9) and noise.within_noise(-7.9) and not noise.within_noise(8.1)
    assert dev_noise([0] * 60 + [1] * 40, accuracy=62.0).near_majority
    assert dev_noise([0] * 60 + [1] * 40, accuracy=55.0).near_majority  # below it too


def evaluation(baseline: float, candidate: float, labels: list[int]) -> Evaluation:
    def measured(name: str, metric: float) -> Measured:
        return Measured(name, 0.0, 1, metric, metric, 100.0, 10.0, 1, 1e9)

    return Evaluation(
        task="t",
        metric_name="accuracy",
        device="cpu",
        baseline=measured("baseline", baseline),
        candidate=measured("prumux", candidate),
        throughput_config=ThroughputConfig(),
        noise=dev_noise(labels, baseline),
    )


def test_a_loss_within_noise_is_reported_as_such_and_keeps_its_number():
    ev = evaluation(85.0, 83.7, [0] * 500 + [1] * 500)  # 2 standard errors: 2.26 points
    text = format_table(ev)
    cand = next(line for line in text.splitlines() if line.startswith("prumux"))
    assert "in noise" in cand and "1.30" not in cand
    assert "loss of 1.30 points is within noise" in text
    assert "majority class 50.00" in text and "noise +-1.13 points" in text
    assert "WARNING" not in text
    assert ev.to_dict()["accuracy_loss"] == pytest.approx(1.3)  # the number stays
    assert ev.to_dict()["loss_within_noise"] is True
    far = evaluation(85.0, 80.0, [0] * 500 + [1] * 500)
    assert "5.00" in format_table(far) and "is within noise" not in format_table(far)
    assert far.loss_within_noise is False


def test_a_baseline_at_the_majority_rate_is_flagged():
    text = format_table(evaluation(53.0, 52.0, [0] * 53 + [1] * 47))
    assert "WARNING: the baseline's dev accuracy (53.00) is within noise" in text


# ---- search asks for --force -------------------------------------------------------------------


class MajorityEvaluator(ReplayEvaluator):
    """A replayed evaluator whose baseline scores dev's majority rate."""

    def baseline_metrics(self) -> dict[str, float]:
        return {"metric": 50.0, "accuracy": 50.0}

    def dev_noise(self):
        return dev_noise([0] * 436 + [1] * 436, 50.0)


SPACE = {
    "name": "tiny",
    "task": "sst2",
    "model": None,
    "params": {"sparsity": {"choices": [0.0, 0.5]}, "mux": {"choices": [1]}},
}


def test_search_refuses_a_baseline_at_the_majority_rate_without_force(tmp_path):
    space = SearchSpace.from_dict(SPACE)
    refused = Searcher(
        replay_settings(space, tmp_path, trials=1), evaluator=lambda v: MajorityEvaluator()
    )
    with pytest.raises(ConfigError, match="majority class.*pass --force"):
        refused.run()
    assert not refused.study.get_trials()
    forced = Searcher(
        replay_settings(space, tmp_path, trials=1, force=True),
        evaluator=lambda v: MajorityEvaluator(),
    )
    forced.run()
    assert len(forced.finished()) == 1
    # a baseline above the noise needs no --force
    (tmp_path / "x").mkdir()
    fine = Searcher(
        replay_settings(space, tmp_path / "x", trials=1), evaluator=lambda v: ReplayEvaluator()
    )
    fine.run()


def test_the_search_command_asks_for_force(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Searcher, "_pipeline_factory", lambda self, variant: MajorityEvaluator())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    argv = [
        "search", "--space", str(space), "--trials", "1", "--no-register",
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert "majority class 50.00" in capsys.readouterr().out
