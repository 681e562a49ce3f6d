"""Structured pruning: surgery equals masking, the search removes the least important structures,
the counted sparsity meets the target, and pruned models save and load."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_encoder

from autoprumux.models import (
    Importance,
    MuxConfig,
    MuxSequenceClassifier,
    PruningPlan,
    apply_plan,
    compute_importance,
    search_plan,
)
from autoprumux.models._encoder import EncoderLayer
from autoprumux.models._pruning import sublayer_params


def make(n: int = 1, layers: int = 2, seed: int = 0) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(seed, num_hidden_layers=layers)
    torch.manual_seed(seed)
    return MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n)).eval()


def random_importance(
    model: MuxSequenceClassifier, seed: int = 0, layer_cost: float = 10.0
) -> Importance:
    g = torch.Generator().manual_seed(seed)
    cfg = model.encoder.config
    return Importance(
        heads=tuple(torch.rand(h, generator=g) for h in cfg.heads),
        ffn=tuple(torch.rand(f, generator=g) * 0.01 for f in cfg.ffn),
        attn_sublayer=(layer_cost,) * cfg.num_layers,
        ffn_sublayer=(layer_cost,) * cfg.num_layers,
    )


def masked_logits(model: MuxSequenceClassifier, plan: PruningPlan, batch) -> torch.Tensor:
    """Reference: the unpruned model with removed heads/units gated to zero."""
    for i, layer in enumerate(model.encoder.layers):
        assert isinstance(layer, EncoderLayer)
        hg = torch.zeros(layer.num_heads)
        hg[list(plan.keep_heads[i])] = 1.0
        fg = torch.zeros(layer.ffn_size)
        fg[list(plan.keep_ffn[i])] = 1.0
        layer.head_gate, layer.ffn_gate = hg, fg
    try:
        with torch.no_grad():
            return model(*batch)
    finally:
        for layer in model.encoder.layers:
            layer.head_gate = layer.ffn_gate = None


@pytest.mark.parametrize("n", [1, 2])
def test_sparsity_zero_leaves_outputs_unchanged(n):
    model = make(n)
    batch = random_batch(4, 9)
    with torch.no_grad():
        before = model(*batch)
    plan = search_plan(model.encoder, random_importance(model), 0.0, model.original_prunable_params)
    assert plan == PruningPlan.keep_all(model.encoder)
    apply_plan(model.encoder, plan)
    with torch.no_grad():
        torch.testing.assert_close(model(*batch), before)
    assert model.sparsity() == 0.0


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_physical_pruning_equals_masking(n, target):
    model = make(n)
    batch = random_batch(4, 9, seed=2)
    plan = search_plan(
        model.encoder, random_importance(model), target, model.original_prunable_params
    )
    assert any(len(k) < 4 for k in plan.keep_heads) or any(len(k) < 37 for k in plan.keep_ffn)
    ref = masked_logits(model, plan, batch)
    apply_plan(model.encoder, plan)
    with torch.no_grad():
        torch.testing.assert_close(model(*batch), ref, atol=1e-5, rtol=1e-4)
    # the module's own size fields were updated and agree with the weights
    for layer, heads, ffn in zip(
        model.encoder.layers, model.encoder.config.heads, model.encoder.config.ffn, strict=True
    ):
        assert layer.num_heads == heads and layer.ffn_size == ffn
        if heads:
            assert layer.qkv.weight.shape == (3 * heads * 8, 32)
            assert layer.attn_out.weight.shape == (32, heads * 8)
        if ffn:
            assert layer.ffn_in.weight.shape == (ffn, 32)


def test_search_removes_lowest_importance_structures():
    model = make(layers=2)
    imp = random_importance(model, seed=3)
    # make head importance clearly ordered and FFN units expensive to remove
    imp = Importance(
        heads=(torch.tensor([0.5, 0.01, 0.9, 0.02]), torch.tensor([0.8, 0.7, 0.03, 0.6])),
        ffn=tuple(torch.full((37,), 100.0) for _ in range(2)),
        attn_sublayer=(1e9, 1e9),
        ffn_sublayer=(1e9, 1e9),
    )
    # 3 heads' worth of parameters (each head: 3*(32*8+8) + 32*8 = 1048)
    total = model.original_prunable_params
    target = 3 * 1048 / total - 1e-6
    plan = search_plan(model.encoder, imp, target, total)
    assert plan.keep_heads == ((0, 2, 3), (0, 1, 3)) or plan.keep_heads == ((0, 2), (0, 1, 3))
    assert set(range(4)) - set(plan.keep_heads[0]) >= {1}
    assert 2 not in plan.keep_heads[1]
    assert all(len(k) == 37 for k in plan.keep_ffn)


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_pruned_ffn_widths_of_a_minilm_shape_stay_multiples_of_8(target):
    """FFN units go in chunks of 8 on a model of MiniLM's shape (384 wide, 1536 FFN), so every
    kept width is a multiple of 8: the alignment half-precision Tensor-Core matmuls need."""
    enc, _ = tiny_encoder(
        0,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    model = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=1))
    imp = random_importance(model, seed=1, layer_cost=1e9)  # no whole sub-layer goes
    plan = search_plan(model.encoder, imp, target, model.original_prunable_params)
    widths = [len(k) for k in plan.keep_ffn]
    assert sum(widths) < 6 * 1536 and all(w % 8 == 0 for w in widths), widths


def test_whole_layer_removed_when_cheap_and_equals_skipping_it():
    model = make(layers=3)
    batch = random_batch(4, 9, seed=4)
    imp = Importance(
        heads=tuple(torch.ones(4) for _ in range(3)),
        ffn=tuple(torch.ones(37) for _ in range(3)),
        attn_sublayer=(5.0, 0.0, 5.0),  # layer 1 is free to remove
        ffn_sublayer=(5.0, 0.0, 5.0),
    )
    layer1 = copy.deepcopy(model.encoder.layers[1])
    n_layer = sum(p.numel() for p in layer1.parameters())
    target = n_layer / model.original_prunable_params - 1e-6
    plan = search_plan(model.encoder, imp, target, model.original_prunable_params)
    assert plan.drop_attn == (False, True, False) and plan.drop_ffn == (False, True, False)
    # reference: the unpruned model with layer 1 skipped
    skip = copy.deepcopy(model)
    del skip.encoder.layers[1]
    with torch.no_grad():
        ref = skip(*batch)
    apply_plan(model.encoder, plan)
    assert len(model.encoder.layers) == 2
    with torch.no_grad():
        torch.testing.assert_close(model(*batch), ref)
    assert model.sparsity() == pytest.approx(1 / 3, abs=1e-6)


def test_a_time_plan_takes_a_whole_sublayer_that_a_parameter_plan_thins():
    """A whole FFN sub-layer loses a little more per parameter than its units, so counting
    parameters thins both layers' units; counting time (`LAYER_TIME`: the sub-layer's fixed
    cost besides its units) removes layer 0's FFN instead, which saves the same parameters."""
    model = make(layers=2)
    cfg = model.encoder.config
    imp = Importance(
        heads=tuple(torch.full((4,), 1e9) for _ in range(2)),
        ffn=tuple(torch.ones(37) for _ in range(2)),
        attn_sublayer=(1e9, 1e9),
        ffn_sublayer=(37 * 1.2, 37 * 1.6),  # per parameter dearer than their units
    )
    block = sublayer_params(model.encoder.layers[0], "ffn")
    target = block / model.original_prunable_params - 1e-6
    by_params = search_plan(model.encoder, imp, target, model.original_prunable_params)
    by_time = search_plan(model.encoder, imp, target, model.original_prunable_params, "time")
    assert by_params.drop_ffn == (False, False)
    assert sum(len(k) for k in by_params.keep_ffn) < 2 * cfg.ffn[0]
    assert by_time.drop_ffn == (True, False) and by_time.keep_ffn[1] == tuple(range(37))
    with pytest.raises(ValueError, match="plan cost"):
        search_plan(model.encoder, imp, target, model.original_prunable_params, "flops")


def test_a_time_plan_takes_heads_before_units_of_equal_loss_per_parameter():
    """A head's time per parameter is `LAYER_TIME.head_per_param` times a unit's: at equal
    estimated loss per parameter, a time plan removes heads first, a parameter plan units."""
    model = make(layers=1)
    hp, up = 1048, 65  # the tiny model's parameters per head and per FFN unit
    imp = Importance(
        heads=(torch.full((4,), 0.011 * hp),),
        ffn=(torch.full((37,), 0.01 * up),),
        attn_sublayer=(1e9,),
        ffn_sublayer=(1e9,),
    )
    target = 2 * hp / model.original_prunable_params - 1e-6
    by_params = search_plan(model.encoder, imp, target, model.original_prunable_params)
    by_time = search_plan(model.encoder, imp, target, model.original_prunable_params, "time")
    assert by_params.keep_heads == ((0, 1, 2, 3),) and len(by_params.keep_ffn[0]) < 37
    assert len(by_time.keep_heads[0]) == 2 and by_time.keep_ffn == (tuple(range(37)),)


@pytest.mark.parametrize("target", [0.2, 0.5, 0.7, 0.9])
def test_counted_sparsity_within_two_points_and_round_trip(tmp_path, target):
    model = make(layers=4, seed=1)
    batch = random_batch(6, 10, seed=5)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])

    def loss_fn(b):
        return F.cross_entropy(model(*b[:3]), b[3])

    fisher = [
        (batch[0][i : i + 1], batch[1][i : i + 1], batch[2][i : i + 1], labels[i : i + 1])
        for i in range(6)
    ]
    imp = compute_importance(model.encoder, loss_fn, fisher, [(*batch, labels)])
    plan = search_plan(model.encoder, imp, target, model.original_prunable_params)
    apply_plan(model.encoder, plan)
    counted = (
        1
        - sum(p.numel() for p in model.encoder.layers.parameters()) / model.original_prunable_params
    )
    assert counted == pytest.approx(model.sparsity())
    assert abs(counted - target) <= 0.02, (counted, target)
    with torch.no_grad():
        out = model(*batch)
    assert torch.isfinite(out).all()
    model.save(tmp_path / "pruned")
    loaded = MuxSequenceClassifier.load(tmp_path / "pruned").eval()
    assert loaded.encoder.config == model.encoder.config
    assert loaded.sparsity() == pytest.approx(counted)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch), out)


def test_fisher_importance_is_zero_for_a_dead_head_and_positive_elsewhere():
    model = make(layers=2)
    layer0 = model.encoder.layers[0]
    with torch.no_grad():  # head 2 of layer 0 writes nothing: its removal cannot change the loss
        layer0.attn_out.weight[:, 16:24] = 0.0
    batch = random_batch(4, 9, seed=6)
    labels = torch.tensor([0, 1, 1, 0])

    def loss_fn(b):
        return F.cross_entropy(model(*b[:3]), b[3])

    fisher = [
        (batch[0][i : i + 1], batch[1][i : i + 1], batch[2][i : i + 1], labels[i : i + 1])
        for i in range(4)
    ]
    imp = compute_importance(model.encoder, loss_fn, fisher, [(*batch, labels)])
    assert float(imp.heads[0][2]) == 0.0
    assert float(imp.heads[0].sum()) > 0 and float(imp.ffn[1].sum()) > 0
    assert len(imp.attn_sublayer) == 2
    # gates are removed again and parameters are trainable as before
    assert all(layer.head_gate is None and layer.ffn_gate is None for layer in model.encoder.layers)
    assert all(p.requires_grad for p in model.parameters())


def test_fisher_importance_is_a_mean_over_examples_like_the_sublayer_ablation():
    # both estimate the mean loss increase of a removal, so the plan can weigh a head or unit
    # against a whole sub-layer: repeating the examples changes neither
    model = make(layers=2)
    batch = random_batch(2, 9, seed=6)
    labels = torch.tensor([0, 1])

    def loss_fn(b):
        return F.cross_entropy(model(*b[:3]), b[3])

    fisher = [
        (batch[0][i : i + 1], batch[1][i : i + 1], batch[2][i : i + 1], labels[i : i + 1])
        for i in range(2)
    ]
    ablation = [(*batch, labels)]
    once = compute_importance(model.encoder, loss_fn, fisher, ablation)
    thrice = compute_importance(model.encoder, loss_fn, fisher * 3, ablation * 3)
    for a, b in [
        *zip(once.heads, thrice.heads, strict=True),
        *zip(once.ffn, thrice.ffn, strict=True),
    ]:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=0.0)  # the values are tiny
    assert once.attn_sublayer == pytest.approx(thrice.attn_sublayer)
    assert float(once.heads[0].sum()) > 0


def test_a_plan_removes_at_most_max_sublayers_whole_sublayers():
    """Every sub-layer costs nothing by its own estimate, so an unlimited plan takes whole
    blocks; capped at one, it takes one block and reaches the target with heads and units,
    never emptying a second layer's attention head by head."""
    model = make(layers=3)
    imp = Importance(
        heads=tuple(torch.ones(4) for _ in range(3)),
        ffn=tuple(torch.ones(37) for _ in range(3)),
        attn_sublayer=(0.0, 0.0, 0.0),
        ffn_sublayer=(0.0, 0.0, 0.0),
    )
    target = 0.5
    free = search_plan(model.encoder, imp, target, model.original_prunable_params, "time")
    assert sum(free.drop_attn) + sum(free.drop_ffn) >= 2

    capped = search_plan(model.encoder, imp, target, model.original_prunable_params, "time", 1)
    whole = sum(capped.drop_attn) + sum(capped.drop_ffn)
    kept = zip(capped.drop_attn, capped.keep_heads, strict=True)
    emptied = sum(1 for a, k in kept if not a and not k)
    assert whole + emptied == 1
    apply_plan(model.encoder, capped)
    assert model.sparsity() >= target - 0.01
