"""L2L layer-to-layer executor: equality with gradient accumulation, host residency, memory
ledger, bad input, and a short real SST-2 fine-tune beside the standard loop."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from conftest import GLUE_DIR, random_batch, tiny_encoder
from torch import nn

from autoprumux.config import Recipe
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier
from autoprumux.search import SearchSpace
from autoprumux.training import L2LExecutor, TrainConfig, predict, train_classifier
from autoprumux.training._config import make_optimizer
from autoprumux.training._losses import classifier_loss

SPECIAL = (2,)


def make(
    n: int = 1, layers: int = 2, dropout: float = 0.0, *, words: bool = True, pooling: str = ""
):
    enc, _ = tiny_encoder(
        0,
        num_hidden_layers=layers,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(1)
    pooling = pooling or ("mean" if n > 1 else "cls")
    model = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n, pooling=pooling))
    model.encoder.embeddings.word.weight.requires_grad_(words)
    return model


def batch(b: int = 8, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    ids, mask, tt = random_batch(b, length, seed=seed)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": tt,
        "labels": torch.arange(b) % 2,
    }


def accumulate(model, cfg, batches, *, teacher=None, streams=True):
    """Reference: standard gradient accumulation, written out. Per step: M seeds from the
    global RNG; micro-batch m runs forward under the stream seeded by seeds[m] (the executor's
    documented protocol; streams=False skips it, a control that must differ under dropout);
    loss_m / M back-propagated; clip the global norm; one AdamW step over all parameters."""
    opt, sched = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    m_count = cfg.micro_batches
    need_states = (cfg.retrieval_weight > 0 and model.n > 1) or cfg.hidden_distill_weight > 0
    all_states = need_states or model.mux_config.pooling == "mean"
    for b in batches:
        seeds = torch.randint(2**62, (m_count,)).tolist()
        opt.zero_grad(set_to_none=True)
        size = b["input_ids"].shape[0] // m_count
        for m in range(m_count):
            mb = {k: v[m * size : (m + 1) * size] for k, v in b.items()}
            ids, mask, tt = mb["input_ids"], mb["attention_mask"], mb["token_type_ids"]
            t_logits = t_states = None
            if teacher is not None:
                with torch.no_grad():
                    t_states = teacher.hidden_states(ids, mask, tt, positions="all")
                    t_logits = teacher.logits_from_states(t_states, mask)
                if cfg.hidden_distill_weight == 0:
                    t_states = None
            with torch.random.fork_rng():
                if streams:
                    torch.manual_seed(seeds[m])
                states = None
                if all_states:
                    states = model.hidden_states(ids, mask, tt, positions="all")
                    logits = model.logits_from_states(states, mask)
                else:
                    logits = model(ids, mask, tt)
                loss = classifier_loss(
                    model,
                    mb,
                    cfg,
                    logits=logits,
                    states=states,
                    teacher_logits=t_logits,
                    teacher_states=t_states,
                    special_ids=SPECIAL,
                    generator=gen,
                )
            (loss / m_count).backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
    return opt


def relay(model, cfg, batches, *, teacher=None):
    with L2LExecutor(model, cfg, special_ids=SPECIAL, teacher=teacher) as ex:
        losses = [ex.step(b) for b in batches]
    return ex, losses


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        float((p - q).detach().abs().max())
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def l2l_cfg(**kw) -> TrainConfig:
    base = dict(steps=3, batch_size=8, lr=1e-3, trainer="l2l", micro_batches=4, grad_clip=0.0)
    base.update(kw)
    return TrainConfig(**base)


# ---- equality with gradient accumulation ------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "layers", "dropout", "retrieval"),
    [
        (1, 1, 0.0, 0.0),
        (1, 2, 0.0, 0.0),
        (1, 4, 0.0, 0.0),
        (1, 2, 0.1, 0.0),
        (1, 4, 0.1, 0.0),
        (2, 1, 0.0, 0.1),
        (2, 2, 0.1, 0.1),
        (2, 2, 0.1, 0.0),  # mean pooling without the retrieval term
    ],
)
def test_one_step_equals_gradient_accumulation(n, layers, dropout, retrieval):
    cfg = l2l_cfg(retrieval_weight=retrieval)
    start = make(n, layers, dropout, words=n == 1)
    ours, ref = copy.deepcopy(start), copy.deepcopy(start)
    torch.manual_seed(5)
    relay(ours, cfg, [batch()])
    torch.manual_seed(5)
    accumulate(ref, cfg, [batch()])
    assert max_diff(ours, start) > 1e-4  # the step moved the parameters
    assert max_diff(ours, ref) < 1e-6
    if dropout:  # the equality holds because each micro-batch replays its own dropout stream
        control = copy.deepcopy(start)
        torch.manual_seed(5)
        accumulate(control, cfg, [batch()], streams=False)
        assert max_diff(ours, control) > 1e-5


def test_three_steps_with_schedule_teacher_retrieval_and_a_shared_trainable_embedding():
    """N=2, dropout on, trainable word embeddings (used by stage 0 and by the retrieval head
    in the last stage), a teacher for logit and hidden-state distillation, the host stash."""
    cfg = l2l_cfg(
        batch_size=12,
        micro_batches=3,
        retrieval_weight=0.1,
        distill_weight=0.5,
        hidden_distill_weight=0.5,
        stash="host",
        warmup_ratio=0.5,
    )
    start = make(2, 3, 0.1, words=True)
    teacher = make(1, 2, 0.1).eval()
    batches = [batch(12, 10, seed=s) for s in range(3)]
    ours, ref = copy.deepcopy(start), copy.deepcopy(start)
    torch.manual_seed(7)
    ex, losses = relay(ours, cfg, batches, teacher=teacher)
    torch.manual_seed(7)
    opt = accumulate(ref, cfg, batches, teacher=teacher)
    word = ours.encoder.embeddings.word.weight.detach()
    assert float((word - start.encoder.embeddings.word.weight.detach()).abs().max()) > 1e-4
    assert max_diff(ours, ref) < 1e-5
    assert all(loss > 0 for loss in losses)
    # the per-stage schedulers followed the same LR schedule as the single optimizer
    lrs = {g["lr"] for st in ex.stages if st.optimizer for g in st.optimizer.param_groups}
    assert lrs == {opt.param_groups[0]["lr"]}


def test_logit_distillation_from_a_cls_teacher_with_cls_pooling_and_global_clipping():
    """KD from an N=1 [CLS] teacher (its head reads only [CLS]) and the default clipping; the
    N=2 student reads its demuxed [CLS] state."""
    cfg = l2l_cfg(micro_batches=2, distill_weight=0.5, grad_clip=1.0)
    start = make(2, 2, 0.1, words=False, pooling="cls")  # the head demuxes [CLS] only
    teacher = make(1, 1).eval()
    ours, ref = copy.deepcopy(start), copy.deepcopy(start)
    torch.manual_seed(2)
    relay(ours, cfg, [batch(), batch(seed=1)], teacher=teacher)
    torch.manual_seed(2)
    accumulate(ref, cfg, [batch(), batch(seed=1)], teacher=teacher)
    assert max_diff(ours, start) > 1e-4
    assert max_diff(ours, ref) < 1e-6


def test_global_clipping_equals_the_standard_clip_and_stage_clipping_differs():
    cfg = l2l_cfg(grad_clip=0.05)  # small: the clip is active
    start = make(1, 2, 0.1)
    ours, ref, staged = (copy.deepcopy(start) for _ in range(3))
    torch.manual_seed(3)
    relay(ours, cfg, [batch()])
    torch.manual_seed(3)
    accumulate(ref, cfg, [batch()])
    torch.manual_seed(3)
    relay(staged, l2l_cfg(grad_clip=0.05, l2l_clip="stage"), [batch()])
    assert max_diff(ours, ref) < 1e-6
    assert max_diff(staged, ref) > 1e-5


@pytest.mark.parametrize(
    ("clip", "mode", "overlaps"),
    [(0.0, "global", True), (1.0, "global", False), (1.0, "stage", True), (1.0, "previous", True)],
)
def test_host_steps_overlap_the_backward_unless_the_global_norm_is_clipped(clip, mode, overlaps):
    model = make(1, 3)
    events: list[tuple[str, str]] = []
    with L2LExecutor(model, l2l_cfg(grad_clip=clip, l2l_clip=mode)) as ex:
        ex.step(batch())  # "previous" clips its first step exactly (no overlap) to get a norm
        prefetch, submit, run = ex._prefetch, ex._pool.submit, ex._run

        def logged_prefetch(stage, *, grads):
            events.append(("load" if grads else "forward", stage.name))
            return prefetch(stage, grads=grads)

        def logged_submit(fn, stage, *args):
            events.append(("step", stage.name))
            return submit(fn, stage, *args)

        def logged_run(stage, *args):
            events.append(("run", stage.name))
            return run(stage, *args)

        ex._prefetch, ex._pool.submit, ex._run = logged_prefetch, logged_submit, logged_run  # type: ignore[method-assign]
        ex.step(batch())
    head_step = events.index(("step", "head"))
    first_stage_backward = events.index(("load", "embeddings"))
    assert (head_step < first_stage_backward) is overlaps
    assert sum(e[0] == "step" for e in events) == 5  # one AdamW per stage
    # each stage's parameters are on their way before the stage below it starts computing
    assert events.index(("forward", "layer 0")) < events.index(("run", "embeddings"))
    assert events.index(("load", "head")) < events.index(("run", "layer 2"))
    runs = [i for i, e in enumerate(events) if e == ("run", "layer 0")]
    assert events.index(("load", "embeddings")) < runs[-1]  # the backward's recomputation


def test_previous_norm_clipping_equals_global_when_the_norm_stays_under_the_clip():
    start = make(1, 2, 0.1)
    batches = [batch(seed=i) for i in range(3)]
    ref, prev = copy.deepcopy(start), copy.deepcopy(start)
    torch.manual_seed(3)
    relay(ref, l2l_cfg(grad_clip=1e6), batches)
    torch.manual_seed(3)
    relay(prev, l2l_cfg(grad_clip=1e6, l2l_clip="previous"), batches)
    assert max_diff(prev, ref) < 1e-6


def test_previous_norm_clipping_scales_by_the_last_steps_global_norm():
    """Step 1 clips exactly; step 2 scales by grad_clip / (step 1's norm): the same update as
    clipping step 2's gradient exactly when both norms are equal, so the result is close to the
    exact clip, not equal, and the norm kept is the one the standard loop computes."""
    start = make(1, 2, 0.0)
    b = batch()
    exact, prev = copy.deepcopy(start), copy.deepcopy(start)
    cfg = l2l_cfg(grad_clip=1e-4)  # below both steps' norms (about 1e-3 and 5e-3)
    with L2LExecutor(prev, l2l_cfg(grad_clip=1e-4, l2l_clip="previous")) as ex:
        assert ex.previous_norm is None
        ex.step(b)
        first = ex.previous_norm
        ex.step(b)
        second = ex.previous_norm
    with L2LExecutor(exact, cfg) as ex:
        ex.step(b)
        ex.step(b)
    ref = copy.deepcopy(start).train()
    logits = ref(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    torch.nn.functional.cross_entropy(logits, b["labels"]).backward()
    norm = torch.nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad], 1e9)
    assert first == pytest.approx(float(norm), rel=1e-4)
    assert second is not None and second != first
    assert 0 < max_diff(prev, exact) < 1e-2


# ---- host residency and the device ledger ---------------------------------------------------
def test_parameters_live_on_the_host_and_device_copies_are_freed():
    model = make(2, 2, 0.1, words=True)
    copies: list[weakref.ref] = []
    with L2LExecutor(model, l2l_cfg(retrieval_weight=0.1), special_ids=SPECIAL) as ex:
        prefetch = ex._prefetch

        def tracked_prefetch(stage, *, grads):
            pending = prefetch(stage, grads=grads)
            for name, t in pending.tensors.items():  # a real copy, even with device == host
                host = stage.tensors[name.removeprefix("model.")]
                assert t.untyped_storage().data_ptr() != host.untyped_storage().data_ptr()
                copies.append(weakref.ref(t))
            return pending

        ex._prefetch = tracked_prefetch  # type: ignore[method-assign]
        for _ in range(2):
            ex.step(batch())
            gc.collect()
            assert ex.stats.current_bytes == 0
            assert copies and all(r() is None for r in copies)
        stats = ex.stats
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert stats.peak_bytes > 0 and stats.peak_by_kind["work"] > 0
    # double buffering: the stage computing and the one arriving, never more
    sizes = sorted(
        sum(t.numel() * t.element_size() for t in st.tensors.values()) for st in ex.stages
    )
    assert sizes[-1] < stats.peak_by_kind["params"] <= sizes[-1] + sizes[-2]
    # the master parameters carry the AdamW state on the host
    opt = next(st.optimizer for st in ex.stages if st.optimizer is not None)
    assert all(s["exp_avg"].device.type == "cpu" for s in opt.state.values())


def _peak(layers: int, stash: str) -> int:
    ex, _ = relay(make(1, layers), l2l_cfg(stash=stash), [batch()])
    return ex.stats.peak_bytes


def test_peak_device_bytes_stay_flat_with_depth_while_the_standard_count_grows():
    def standard(layers: int) -> int:  # params + grads + AdamW's two moments, no activations
        return 4 * sum(p.numel() * p.element_size() for p in make(1, layers).parameters())

    host = [_peak(d, "host") for d in (2, 8)]
    device = [_peak(d, "device") for d in (2, 8)]
    assert host[1] <= 1.05 * host[0], host
    assert device[1] > device[0]  # the device stash holds one boundary per stage
    assert standard(8) > 2.5 * standard(2)
    assert host[1] < standard(8) / 3


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"trainer": "l2l", "batch_size": 8, "micro_batches": 3}, r"batch size \(8\).*\(3\)"),
        ({"micro_batches": 0}, r"micro_batches \(0\) must be a positive integer"),
        ({"trainer": "l3l"}, r"trainer \('l3l'\) must be one of \['standard', 'l2l', 'auto'\]"),
        ({"stash": "disk"}, r"stash \('disk'\) must be one of \['device', 'host'\]"),
        ({"l2l_clip": "layer"}, r"l2l_clip \('layer'\)"),
    ],
)
def test_bad_trainer_settings_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{"steps": 1, **kw})


def test_models_without_a_layer_list_and_odd_batches_are_refused():
    with pytest.raises(ConfigError, match="encoder.layers.*got Linear"):
        L2LExecutor(nn.Linear(2, 2), l2l_cfg())  # type: ignore[arg-type]
    model = make()
    model.encoder.layers = nn.Sequential(*model.encoder.layers)  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="Sequential; use trainer='standard'"):
        L2LExecutor(model, l2l_cfg())
    with L2LExecutor(make(), l2l_cfg()) as ex, pytest.raises(ConfigError, match=r"\(6\)"):
        ex.step(batch(6))
    with pytest.raises(ConfigError, match="need a teacher"):
        L2LExecutor(make(), l2l_cfg(distill_weight=0.5))


def test_the_recipe_cli_and_search_space_take_the_trainer():
    from autoprumux.cli import _recipe, build_parser

    args = build_parser().parse_args(
        ["evaluate", "--trainer", "l2l", "--l2l-micro-batches", "8", "--l2l-stash", "host"]
    )
    assert (_recipe(args).trainer, _recipe(args).l2l_micro_batches) == ("l2l", 8)
    good = {"params": {"mux": {"choices": [1]}}}
    space = SearchSpace.from_dict({**good, "recipe": {"trainer": "l2l", "l2l_micro_batches": 2}})
    assert space.recipe.trainer == "l2l" and space.recipe.l2l_micro_batches == 2
    with pytest.raises(ConfigError, match=r"trainer \('fast'\)"):
        SearchSpace.from_dict({**good, "recipe": {"trainer": "fast"}})
    with pytest.raises(ConfigError, match=r"batch size \(32\).*\(5\)"):
        Recipe(trainer="l2l", l2l_micro_batches=5)


# ---- used for real ----------------------------------------------------------------------------
def test_l2l_fine_tune_on_real_sst2_matches_the_standard_loop():
    """Two layers of the packaged MiniLM, dropout off (so both loops follow the same trajectory
    up to float rounding), frozen word embeddings, the default global clipping: 50 steps of 16
    examples (4 micro-batches for L2L) through `train_classifier` on a slice of SST-2."""
    from autoprumux.data import encode, load_task
    from autoprumux.models import resolve_model

    base = resolve_model(None)
    tok = base.tokenizer()
    data = load_task("sst2", data_dir=GLUE_DIR, max_train_examples=1600, max_dev_examples=300)
    train, dev = encode(data.train, tok, 48), encode(data.dev, tok, 48)
    enc = base.build_encoder()
    del enc.layers[2:]
    enc.refresh_config()
    for module in enc.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for layer in enc.layers:
        layer.attention_dropout = 0.0
    torch.manual_seed(0)
    start = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(pooling="mean"))
    start.encoder.embeddings.word.weight.requires_grad_(False)
    labels = torch.tensor([x.label for x in dev])
    preds, stats = {}, {}
    for trainer in ("standard", "l2l"):
        model = copy.deepcopy(start)
        cfg = TrainConfig(steps=50, batch_size=16, lr=2e-4, trainer=trainer, micro_batches=4)
        stats[trainer] = train_classifier(model, train, cfg)
        preds[trainer] = predict(model, dev).argmax(-1)
    acc = {k: 100 * float((p == labels).float().mean()) for k, p in preds.items()}
    assert acc["standard"] > 65.0, acc  # it learned the task
    assert abs(acc["l2l"] - acc["standard"]) <= 1.0, acc
    assert float((preds["l2l"] == preds["standard"]).float().mean()) >= 0.98
    assert stats["l2l"]["peak_device_bytes"] > 0 and "peak_device_bytes" not in stats["standard"]


# ---- trainer="auto": the standard loop, L2L when the device runs out of memory --------------
def _train(model, trainer: str, *, oom_once: bool = False) -> dict:
    from autoprumux.data import Encoded
    from autoprumux.training import train_classifier

    items = [Encoded([2, 5 + i % 50, 7, 3], [0, 0, 0, 0], i % 2) for i in range(32)]
    cfg = l2l_cfg(trainer=trainer, steps=2)
    handle = None
    if oom_once:
        calls = {"n": 0}

        def hook(module, args):
            calls["n"] += 1
            if calls["n"] == 1:
                with torch.no_grad():  # half-way through, as a real OOM would leave it
                    for p in module.parameters():
                        p.add_(1.0)
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        handle = model.encoder.layers[0].register_forward_pre_hook(hook)
    try:
        return train_classifier(model, items, cfg)
    finally:
        if handle is not None:
            handle.remove()


def test_auto_trainer_retries_with_l2l_after_an_out_of_memory_error(caplog):
    start = make(1, 2)
    fell_back, l2l, standard = (copy.deepcopy(start) for _ in range(3))
    stats = _train(fell_back, "auto", oom_once=True)
    assert stats["l2l_fallback"] == 1.0 and stats["peak_device_bytes"] > 0
    assert "training again with L2L" in caplog.text
    _train(l2l, "l2l")
    assert max_diff(fell_back, l2l) < 1e-6  # started again from the untouched weights
    assert max_diff(fell_back, start) > 1e-4
    stats = _train(standard, "auto")  # no error: the standard loop's result
    assert stats["l2l_fallback"] == 0.0
    reference = copy.deepcopy(start)
    _train(reference, "standard")
    assert max_diff(standard, reference) < 1e-6
