"""Late multiplexing: per-instance layers before the combiner, and the learned concat combiner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import random_batch, tiny_encoder

from autoprumux.errors import ConfigError
from autoprumux.evaluation._throughput import model_flops
from autoprumux.models import Encoder, EncoderConfig, MuxConfig, MuxSequenceClassifier
from autoprumux.training import TrainConfig

THREADS = torch.get_num_threads()


def make(n: int, layers: int = 0, combiner: str = "binding", pooling: str = "cls", seed: int = 0):
    enc, _ = tiny_encoder(seed, num_hidden_layers=3)
    torch.manual_seed(seed + 1)
    mux = MuxConfig(n=n, layers=layers, combiner=combiner, pooling=pooling)
    return MuxSequenceClassifier(enc, num_labels=3, mux=mux).eval()


GOLDEN = Path(__file__).parent / "data" / "mux_early_mixing_golden.pt"


def test_k0_is_the_early_mixing_model():
    """mux_layers 0 with the binding combiner computes what the model computed before late
    multiplexing existed: the file holds models (their weights and configuration), inputs and
    the logits that code gave, one thread, N=2 and N=4, both variants and poolings. Bit for bit
    on the machine that wrote the file; another CPU's kernels may round the last float32 bit
    differently, so the comparison allows a few ulps and nothing more (a changed computation
    moves these logits by orders of magnitude more)."""
    torch.set_num_threads(1)
    try:
        for case in torch.load(GOLDEN, weights_only=False):
            cfg = case["model"]
            assert "layers" not in cfg["mux"]  # written before the field existed
            model = MuxSequenceClassifier(
                Encoder(EncoderConfig.from_dict(cfg["encoder"])),
                num_labels=cfg["num_labels"],
                mux=MuxConfig(**cfg["mux"]),
            ).eval()
            model.load_state_dict(case["state"], strict=True)  # no new parameters at k=0
            assert model.mux_config.layers == 0 and model.mux_config.combiner == "binding"
            with torch.no_grad():
                torch.testing.assert_close(
                    model(*case["inputs"]), case["logits"], rtol=1e-5, atol=1e-7
                )
    finally:
        torch.set_num_threads(THREADS)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("combiner", ["binding", "concat", "concat_skip"])
def test_per_instance_layers_equal_the_n1_layers_on_each_instance(k, combiner):
    """What reaches the combiner after k layers is each instance run alone through the same
    layers (its own padding mask): row i equals the N=1 model's layer-k output for input i."""
    n = 2
    model = make(n, layers=k, combiner=combiner)
    single = MuxSequenceClassifier(model.encoder, num_labels=3).eval()
    ids, mask, tt = random_batch(3, 8, seed=6)  # 3 rows: one dummy row inside
    seen: list[torch.Tensor] = []
    late_mix = model.late_mix

    def spy(lay, x):
        seen.append(x)
        return late_mix(lay, x)

    model.late_mix = spy  # type: ignore[method-assign]
    per_layer: list[torch.Tensor] = []
    with torch.no_grad():
        model(ids, mask, tt)
        single.hidden_states(ids, mask, tt, positions="all", layers=per_layer)
    (x,) = seen
    assert x.shape == (4, 8, 32)
    real = mask.bool().unsqueeze(-1).expand_as(per_layer[k - 1])
    torch.testing.assert_close(x[:3][real], per_layer[k - 1][real], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_permuting_instances_with_their_slots_permutes_outputs(layers):
    """Instance i is read back from index i and nowhere else when it is combined late."""
    n = 2
    model = make(n, layers=layers, pooling="mean")
    ids, mask, tt = random_batch(n, 8, seed=5)
    perm = torch.tensor([1, 0])
    permuted = make(n, layers=layers, pooling="mean")
    permuted.load_state_dict(model.state_dict())
    with torch.no_grad():
        permuted.index_embeddings.weight[:n] = model.index_embeddings.weight[:n][perm]
        permuted.multiplexer.vectors.copy_(model.multiplexer.vectors[perm])
        out = model(ids, mask, tt)
        out_p = permuted(ids[perm], mask[perm], tt[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("layers", "combiner"),
    [(1, "binding"), (2, "concat"), (0, "concat"), (2, "concat_skip"), (0, "concat_skip")],
)
def test_outputs_depend_on_the_slot(layers, combiner):
    """A model that ignored which slot an instance sits in would demultiplex nothing."""
    model = make(2, layers=layers, combiner=combiner)
    ids, mask, tt = random_batch(2, 8, seed=5)
    perm = torch.tensor([1, 0])
    with torch.no_grad():
        out = model(ids, mask, tt)
        swapped = model(ids[perm], mask[perm], tt[perm])
    assert not torch.allclose(swapped, out[perm], atol=1e-4)


def test_concat_combiner_projects_each_instance_to_its_share_of_the_hidden_size():
    model = make(4, layers=1, combiner="concat")
    p = model.multiplexer.projections
    assert p.shape == (4, 32, 8) and p.requires_grad
    # orthonormal columns at initialisation: the combined states keep the per-instance scale
    gram = p.transpose(1, 2) @ p
    torch.testing.assert_close(gram, torch.eye(8).expand(4, 8, 8), atol=1e-5, rtol=0)
    x = torch.randn(3, 4, 5, 32)
    out = model.multiplexer(x)
    torch.testing.assert_close(out[..., 8:16], x[:, 1] @ p[1])


def test_concat_skip_starts_as_concat_and_reads_each_instance_own_states():
    """At initialisation the skip map is zero: the model computes what the concat model with the
    same weights computes. With the mixed half of the demultiplexer silenced and the skip made
    the identity, instance i reads back LayerNorm(its own layer-k states), position by position
    (the [CLS] state for pooling "cls"), whatever shares its group."""
    ids, mask, tt = random_batch(3, 8, seed=4)  # 3 rows: a dummy row joins the second group
    skip = make(2, layers=2, combiner="concat_skip")
    plain = make(2, layers=2, combiner="concat")
    assert torch.equal(skip.demux.skip.weight, torch.zeros(32, 32))
    state = {k: v for k, v in skip.state_dict().items() if k != "demux.skip.weight"}
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(skip(ids, mask, tt), plain(ids, mask, tt))
    single = MuxSequenceClassifier(skip.encoder, num_labels=3).eval()
    per_layer: list[torch.Tensor] = []
    with torch.no_grad():
        skip.demux.proj.weight.zero_()
        skip.demux.proj.bias.zero_()
        skip.demux.skip.weight.copy_(torch.eye(32))
        single.hidden_states(ids, mask, tt, positions="all", layers=per_layer)
        own = skip.demux.norm(per_layer[1])  # layer k=2's output of each input alone
        every = skip.hidden_states(ids, mask, tt, positions="all")
        cls = skip.hidden_states(ids, mask, tt, positions="cls")
    real = mask.bool()
    torch.testing.assert_close(every[real], own[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cls, own[:, 0], atol=1e-5, rtol=1e-4)


def test_bad_mux_layers_and_combiners_are_clear_errors():
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="mux_layers"):
            MuxConfig(n=2, layers=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="combiner 'sum' is not one of"):
        MuxConfig(n=2, combiner="sum")
    with pytest.raises(ConfigError, match="multiplexed models only"):
        MuxConfig(n=1, layers=1)
    enc, _ = tiny_encoder(0, num_hidden_layers=3)
    with pytest.raises(ConfigError, match=r"mux_layers \(3\) must be below the encoder's 3 layers"):
        MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=2, layers=3))
    enc, _ = tiny_encoder(0)
    with pytest.raises(ConfigError, match="divides 32"):
        MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=3, combiner="concat"))


@pytest.mark.parametrize("n", [2, 4])
def test_flops_account_for_the_per_instance_layers(n):
    """The encoder's FLOPs fall as L / (k + (L - k) / N) (L = 3 here), up to the N prefix
    positions and the mux and demux work, which the ratio below leaves within 15%."""
    b, t = 8, 64
    full = model_flops(make(1), b, t)
    for k in (0, 1, 2):
        ideal = 3 / (k + (3 - k) / n)
        got = full / model_flops(make(n, layers=k), b, t)
        assert ideal / 1.15 < got <= ideal, (k, got, ideal)
    # the skip map: one H x H product per instance and read position (here [CLS] only)
    extra = model_flops(make(n, 2, "concat_skip"), b, t) - model_flops(make(n, 2, "concat"), b, t)
    assert extra == b * 2 * 32 * 32


# ---- the pipeline: late models start from the baseline ------------------------------------------
@pytest.fixture
def late_pipe(tiny_checkpoint, tmp_path):
    from conftest import GLUE_DIR

    from autoprumux import PruMuxPipeline, Recipe

    recipe = Recipe(
        max_train_examples=64,
        batch_size=16,
        max_seq_len=32,
        finetune_steps=2,
        mux_warmup_steps=0,
        mux_finetune_steps=3,
        recovery_steps=2,
        prune_stages=1,
        importance_examples=16,
    )
    return PruMuxPipeline(
        task="sst2",
        model=tiny_checkpoint,
        recipe=recipe,
        data_dir=str(GLUE_DIR),
        cache_dir=tmp_path,
    )


@pytest.mark.parametrize("combiner", ["binding", "concat", "concat_skip"])
def test_frozen_backbone_training_changes_only_the_adapters(late_pipe, combiner):
    from autoprumux.config import MuxShape
    from autoprumux.pipeline._mux import from_baseline

    base = late_pipe.baseline()
    model = late_pipe.mux_model(MuxShape(2, 1, combiner))
    assert model.mux_config.layers == 1 and model.mux_config.combiner == combiner
    # the encoder (every layer, the embeddings and the pooler) is the baseline's, bit for bit
    for (name, p), q in zip(
        model.encoder.state_dict().items(), base.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    # the adapters trained: they moved from their initialisation
    fresh = from_baseline(late_pipe, MuxShape(2, 1, combiner))
    moved = [
        name
        for name, p in model.state_dict().items()
        if not name.startswith("encoder.") and not torch.equal(p, fresh.state_dict()[name])
    ]
    assert any(n.startswith("demux.") for n in moved)
    assert any(n.startswith("index_embeddings") for n in moved)
    if combiner != "binding":
        assert "multiplexer.projections" in moved
    assert ("demux.skip.weight" in moved) == (combiner == "concat_skip")
    entry = next((late_pipe.cache.root / "mux").iterdir())
    meta = late_pipe.cache.meta(entry)
    assert 0 < meta["trainable_parameters"] < sum(p.numel() for p in model.parameters()) / 2


def test_shared_lr_trains_the_shared_layers_and_keeps_the_per_instance_ones(
    late_pipe, tiny_checkpoint
):
    import dataclasses

    from autoprumux import PruMuxPipeline
    from autoprumux.config import MuxShape
    from autoprumux.training import shared_layer_names, train_late_frozen

    shape = MuxShape(2, 1, "concat")
    frozen = late_pipe.mux_model(shape)
    pipe = PruMuxPipeline(
        task="sst2",
        model=tiny_checkpoint,
        recipe=dataclasses.replace(late_pipe.recipe, late_mux_shared_lr=1e-3),
        data_dir=late_pipe.data_dir,
        cache_dir=late_pipe.cache.root,
    )
    assert pipe.mux_entry_key(shape) != late_pipe.mux_entry_key(shape)  # its own cache entry
    model = pipe.mux_model(shape)
    base = pipe.baseline().encoder.state_dict()
    shared = set(shared_layer_names(model))
    assert shared and all(n.startswith(("layers.1.", "pooler.")) for n in shared)
    moved = {n for n, p in model.encoder.state_dict().items() if not torch.equal(p, base[n])}
    # the embeddings and the per-instance layer 0 are the baseline's: their outputs were cached
    assert moved and moved <= shared
    assert any(n.startswith("layers.1.") for n in moved)
    assert not torch.equal(
        model.multiplexer.projections, frozen.multiplexer.projections
    )  # trained differently from the frozen-backbone model
    # the frozen loop refuses a trainable per-instance layer, and shared layers without a rate
    model.encoder.layers[0].requires_grad_(True)
    with pytest.raises(ValueError, match="first k layers frozen"):
        train_late_frozen(model, pipe.train_items[:16], TrainConfig(steps=1), teacher=model)
    model.encoder.layers[0].requires_grad_(False)
    with pytest.raises(ValueError, match="shared_lr > 0"):
        train_late_frozen(model, pipe.train_items[:16], TrainConfig(steps=1), teacher=model)


def test_shared_lr_goes_to_the_named_parameters_only():
    from autoprumux.training._config import make_optimizer

    model = make(2, layers=1, combiner="concat")
    params = dict(model.named_parameters())
    slow = {"encoder.layers.1.qkv.weight", "encoder.layers.1.qkv.bias"}
    opt, _ = make_optimizer(model, TrainConfig(steps=2, lr=1e-3), dict.fromkeys(slow, 1e-5))
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {rate[id(params[n])] for n in slow} == {1e-5}
    assert {rate[id(p)] for n, p in params.items() if n not in slow} == {1e-3}
    assert len(rate) == len(params)  # every parameter once
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(params["encoder.layers.1.qkv.bias"])] == 0.0  # biases still undecayed
    assert decay[id(params["encoder.layers.1.qkv.weight"])] > 0


def test_late_models_are_cached_per_shape_and_multiplex_the_pruned_model(late_pipe):
    from autoprumux.config import Candidate, MuxShape

    late_pipe.mux_model(MuxShape(2, 1, "concat"))
    late_pipe.mux_model(MuxShape(2, 1, "concat"))  # a hit
    late_pipe.mux_model(MuxShape(2, 1, "binding"))
    assert len(list((late_pipe.cache.root / "mux").iterdir())) == 2
    pruned = late_pipe.candidate(
        Candidate(sparsity=0.5, mux=2, mux_layers=1, mux_combiner="concat")
    )
    assert pruned.mux_config.layers == 1 and abs(pruned.sparsity() - 0.5) < 0.02
    # its cache key holds N, the late fields and the pruned candidate's key
    from autoprumux.pipeline._keys import pruned_late_key

    key = pruned_late_key(late_pipe, 0.5, MuxShape(2, 1, "concat"))
    assert key != pruned_late_key(late_pipe, 0.5, MuxShape(4, 1, "concat"))
    assert key != pruned_late_key(late_pipe, 0.6, MuxShape(2, 1, "concat"))
    assert key["n"] == 2 and key["mux_finetune_steps"] == 3 and key["mux_layers"] == 1
    # a frozen late model at s > 0 sits on the pruned N=1 candidate, its encoder untouched
    n1 = late_pipe.candidate(Candidate(sparsity=0.5))
    for (name, p), q in zip(
        pruned.encoder.state_dict().items(), n1.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    from autoprumux.evaluation import ThroughputConfig

    tp = ThroughputConfig(batch_size=4, seq_len=32, warmup=0, repeats=1)
    ev = late_pipe.evaluate(Candidate(mux=2, mux_layers=1, mux_combiner="concat"), throughput=tp)
    assert ev.candidate.n == 2 and "k=1" in ev.candidate.name


def test_pipeline_refuses_mux_layers_the_model_does_not_have(late_pipe):
    from autoprumux.config import Candidate

    with pytest.raises(ConfigError, match=r"mux_layers \(2\) must be below the model's 2 layers"):
        late_pipe.evaluate(Candidate(mux=2, mux_layers=2))
    with pytest.raises(ConfigError, match="divides 32"):
        late_pipe.evaluate(Candidate(mux=3, mux_combiner="concat"))
    assert not (late_pipe.cache.root / "baseline").exists()  # refused before any training


@pytest.mark.parametrize("combiner", ["binding", "concat", "concat_skip"])
def test_frozen_targets_reproduce_the_full_forward(combiner):
    """The frozen loop's inputs (per-instance states computed once, padded to the longest item)
    give the states the whole model computes, and the teacher's states are the N=1 model's."""
    from autoprumux.data import Encoded, collate
    from autoprumux.training import frozen_targets

    model = make(2, layers=2, combiner=combiner, pooling="mean")
    if model.demux.skip is not None:  # trained: the skip reads the stored states too
        torch.nn.init.normal_(model.demux.skip.weight, std=0.5)
    teacher = MuxSequenceClassifier(model.encoder, num_labels=3).eval()
    ids, mask, tt = random_batch(5, 10, seed=8)
    items = [
        Encoded(tuple(ids[i][mask[i].bool()].tolist()), tuple(tt[i][mask[i].bool()].tolist()), 0)
        for i in range(5)
    ]
    targets = frozen_targets(model, teacher, items, batch_size=2)
    assert targets.instance_states.shape == (5, 10, 32)
    pick = torch.tensor([3, 0, 4])  # a batch of 3 (one dummy row), padded to its longest
    batch = collate([items[i] for i in pick])
    length = batch["input_ids"].shape[1]
    lay = model.layout(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    x = targets.instance_states[pick, :length].float()
    x = torch.cat([x, x.new_zeros(1, *x.shape[1:])])
    with torch.no_grad():
        got = model.states_from_instance_layers(lay, x)
        want = model.hidden_states(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions="all"
        )
        t_want = teacher.hidden_states(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions="all"
        )
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=5e-3, rtol=5e-3)  # fp16 storage
    t_got = targets.teacher_states[pick, :length].float()
    torch.testing.assert_close(t_got[real], t_want[real], atol=5e-3, rtol=5e-3)
