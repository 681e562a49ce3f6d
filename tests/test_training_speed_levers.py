"""The training loop's speed levers: length-grouped batches and bf16 autocast (the choice, its
resolution per device, and that the loop really runs the forward in it)."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from test_evaluation import make, toy_items

from autoprumux import Recipe
from autoprumux.data import Encoded, infinite_batches
from autoprumux.errors import ConfigError
from autoprumux.training import TrainConfig, resolve_autocast, train_classifier


def _varied(count: int, seed: int = 0) -> list[Encoded]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.randint(3, 60)
        out.append(Encoded(tuple(range(1000 * i, 1000 * i + n)), (0,) * n, i % 2))
    return out


def _mean_width(it, batches: int) -> float:
    return sum(next(it)["input_ids"].shape[1] for _ in range(batches)) / batches


def test_grouped_batches_see_every_item_once_per_epoch_with_less_padding():
    items = _varied(64 * 50 * 2 + 7)  # two pools and a remainder that is dropped
    batch = 64
    per_epoch = len(items) // batch
    it = infinite_batches(items, batch, seed=1, batching="grouped", with_index=True)
    epoch = [next(it) for _ in range(per_epoch)]
    seen = [int(i) for b in epoch for i in b["index"]]
    assert len(seen) == len(set(seen)) == per_epoch * batch
    # each batch holds the items its index names, padded to its own longest
    for b in epoch[:5]:
        lengths = [len(items[int(i)].input_ids) for i in b["index"]]
        assert b["input_ids"].shape[1] == max(lengths)
        assert b["attention_mask"].sum(1).tolist() == lengths
    grouped = sum(b["input_ids"].shape[1] for b in epoch) / per_epoch
    plain = _mean_width(infinite_batches(items, batch, seed=1), per_epoch)
    assert grouped < 0.6 * plain, (grouped, plain)
    # the batches' order is shuffled, not sorted by length
    widths = [b["input_ids"].shape[1] for b in epoch]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    # the same seed draws the same batches; the next epoch draws others
    again = infinite_batches(items, batch, seed=1, batching="grouped", with_index=True)
    assert all(torch.equal(next(again)["index"], b["index"]) for b in epoch)
    nxt = [int(i) for _ in range(3) for i in next(it)["index"]]
    assert nxt != seen[: len(nxt)]


def test_bad_batching_and_autocast_values_are_refused_where_they_enter():
    with pytest.raises(ConfigError, match=r"batching \('sorted'\)"):
        next(infinite_batches(_varied(8), 4, batching="sorted"))
    with pytest.raises(ConfigError, match="batching"):
        TrainConfig(steps=1, batching="sorted")
    with pytest.raises(ConfigError, match="autocast"):
        TrainConfig(steps=1, autocast="fp16")
    with pytest.raises(ConfigError, match="batching"):
        Recipe(batching="length")
    with pytest.raises(ConfigError, match="train_autocast"):
        Recipe(train_autocast="int8")
    cfg = TrainConfig.from_recipe(Recipe(batching="random", train_autocast="bf16"), 5)
    assert (cfg.batching, cfg.autocast) == ("random", "bf16")


def test_auto_autocast_is_bf16_only_where_the_device_multiplies_bf16(monkeypatch):
    import autoprumux.training._config as config_module

    monkeypatch.setattr(config_module, "has_bf16_matmul", lambda: True)
    assert resolve_autocast("auto", "cpu") == "bf16"
    assert resolve_autocast("auto", "cpu", trainer="l2l") == "fp32"  # L2L runs fp32
    monkeypatch.setattr(config_module, "has_bf16_matmul", lambda: False)
    assert resolve_autocast("auto", "cpu") == "fp32"
    assert resolve_autocast("bf16", "cpu") == "bf16"  # asked for: emulated, but honoured
    assert resolve_autocast("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("autocast", ["fp32", "bf16"])
def test_the_loop_runs_its_forward_in_the_chosen_precision_and_keeps_fp32_weights(autocast):
    torch.manual_seed(0)
    model = make(1)
    seen: list[torch.dtype] = []
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, autocast=autocast, batching="grouped")
    stats = train_classifier(model, toy_items(64), cfg)
    hook.remove()
    want = torch.bfloat16 if autocast == "bf16" else torch.float32
    assert seen and set(seen) == {want}
    assert stats["steps"] == 3 and torch.isfinite(torch.tensor(stats["final_loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_training_learns_the_toy_task_as_fp32_does():
    from autoprumux.training import predict

    dev = toy_items(128, seed=1)
    labels = torch.tensor([x.label for x in dev])
    accs = {}
    for autocast in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = make(1)
        cfg = TrainConfig(steps=150, batch_size=16, lr=2e-3, autocast=autocast)
        train_classifier(model, toy_items(512), cfg)
        accs[autocast] = float((predict(model, dev).argmax(-1) == labels).float().mean())
    assert accs["bf16"] >= 0.85 and abs(accs["bf16"] - accs["fp32"]) <= 0.05, accs


def test_the_cache_key_names_the_batching_and_the_resolved_precision(tiny_checkpoint, tmp_path):
    from conftest import GLUE_DIR

    from autoprumux import PruMuxPipeline

    def key(**levers):
        recipe = Recipe(max_train_examples=64, batch_size=16, max_seq_len=32, **levers)
        return PruMuxPipeline(
            task="sst2",
            model=tiny_checkpoint,
            recipe=recipe,
            data_dir=str(GLUE_DIR),
            cache_dir=tmp_path,
        ).entry_key()

    plain = key(batching="random", train_autocast="fp32")
    assert plain["batching"] == "random" and plain["train_autocast"] == "fp32"
    grouped = key(batching="grouped", train_autocast="fp32")
    assert grouped["batching"] == "grouped" and grouped["train_autocast"] == "fp32"
    assert key(batching="random", train_autocast="bf16")["train_autocast"] == "bf16"
    assert dataclasses.asdict(Recipe())["batching"] == "grouped"


def test_predict_runs_an_n1_model_in_length_sorted_batches_and_returns_logits_in_order(
    monkeypatch,
):
    import autoprumux.training._loop as loop
    from autoprumux.training import predict

    model = make(n=1)
    rng = random.Random(3)
    lengths = [rng.randint(3, 30) for _ in range(50)]
    items = [Encoded(tuple(range(8, 8 + n)), (0,) * n, n % 2) for n in lengths]
    widths: list[int] = []
    real = loop.collate

    def collate(batch):
        out = real(batch)
        widths.append(out["input_ids"].shape[1])
        return out

    monkeypatch.setattr(loop, "collate", collate)
    got = predict(model, items, batch_size=8)
    assert widths == sorted(widths) and len(widths) == 7  # each batch as wide as its longest
    alone = torch.cat([predict(model, [x], batch_size=1) for x in items])
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-4)  # each item's own logits
    # a multiplexed model mixes each group of N: its items keep the order they were given
    widths.clear()
    predict(make(n=2), items, batch_size=8)
    assert widths != sorted(widths)
