"""Precision as the last step of a configuration: converted models predict like their fp32
source, keep its size and sparsity, are refused on a device that does not offer them, and run
through the pipeline, the search space, the meta-model and the recommendation."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch, tiny_encoder
from test_search import DATA, TINY_RECIPE, TP

from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.config import PRECISIONS, check_precision
from autoprumux.errors import ConfigError
from autoprumux.meta._model import MetaModel, features, training_table
from autoprumux.models import (
    Int8Calibration,
    MuxConfig,
    MuxSequenceClassifier,
    PruningPlan,
    StaticInt8Linear,
    Student,
    StudentConfig,
    StudentEnsemble,
    apply_plan,
    calibrate_int8,
    count_parameters,
    fake_int8,
    to_precision,
)
from autoprumux.search import Searcher, SearchSettings, SearchSpace


def _model(n: int, *, pruned: bool) -> MuxSequenceClassifier:
    torch.manual_seed(0)
    enc, _ = tiny_encoder(0)
    m = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n)).eval()
    if pruned:
        layers = len(m.encoder.layers)
        plan = PruningPlan(
            keep_heads=((0, 2),) * layers,
            keep_ffn=(tuple(range(16)),) * layers,
            drop_attn=(False,) * layers,
            drop_ffn=(False,) * layers,
        )
        apply_plan(m.encoder, plan)
    return m


def _calibration(model, *batches) -> Int8Calibration:
    """The int8 ranges of `model` over `batches` (default: three random batches)."""
    return calibrate_int8(model, batches or [random_batch(8, 16, seed=s) for s in (11, 12, 13)])


def _convert(model, precision):
    cal = _calibration(model) if precision == "int8" else None
    return to_precision(model, precision, calibration=cal)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("precision", ["int8", "bf16", "fp16", "tf32"])
def test_a_converted_model_predicts_like_its_source(n, pruned, precision):
    """int8: weights per channel and activations per batch in 8 bits; bf16 keeps 8 bits of
    mantissa: both within a few hundredths of logits of order one on a tiny model."""
    m = _model(n, pruned=pruned)
    before = copy.deepcopy(m.state_dict())
    ids, mask, tt = random_batch(8, 16, seed=1)
    with torch.inference_mode():
        ref = m(ids, mask, tt)
        q = _convert(m, precision)
        out = q(ids, mask, tt).float()
    tol = {"int8": 0.05, "bf16": 0.05, "fp16": 0.01, "tf32": 1e-5}[precision]
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= tol * max(1.0, float(ref.abs().max()))
    # the source is untouched, and the converted model counts as its source does
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert q.sparsity() == pytest.approx(m.sparsity())
    assert q.n == m.n and q.num_labels == m.num_labels
    assert count_parameters(q.encoder.layers) == count_parameters(m.encoder.layers)


def test_int8_really_quantizes_the_linear_layers_and_students_convert_too():
    m = _model(1, pruned=False)
    cal = _calibration(m)
    q = to_precision(m, "int8", calibration=cal)
    assert any(isinstance(x, StaticInt8Linear) for x in q.modules())
    # only the layers inference never runs (the warm-up's retrieval head) stay fp32
    plain = [n for n, x in q.named_modules() if isinstance(x, torch.nn.Linear)]
    assert all(n in cal.unused for n in plain) and "encoder" not in str(plain)
    assert to_precision(q, "fp32") is q  # fp32 is no conversion
    enc, _ = tiny_encoder(0)
    teacher = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=1)).eval()
    ens = StudentEnsemble.from_teacher(teacher, StudentConfig(k=2, depth=1)).eval()
    qe = _convert(ens, "int8")
    assert qe.prunable_parameters() == ens.prunable_parameters()
    assert isinstance(next(iter(qe.students)), Student)
    ids, mask, tt = random_batch(4, 12, seed=2)
    with torch.inference_mode():
        assert (qe(ids, mask, tt) - ens(ids, mask, tt)).abs().max() < 0.05


@pytest.mark.parametrize(
    "precision, device, offered",
    [
        ("int8", "cuda", "['fp32', 'tf32', 'bf16', 'fp16']"),
        ("fp16", "cpu", "['fp32', 'int8', 'ov-fp32', 'ov-int8']"),
        ("bf16", "cpu", "['fp32', 'int8', 'ov-fp32', 'ov-int8']"),
        ("tf32", "cuda:0", None),
    ],
)
def test_a_precision_the_device_does_not_offer_is_refused_naming_the_choices(
    precision, device, offered
):
    if offered is None:
        assert check_precision(precision, device) == precision
        return
    with pytest.raises(ConfigError, match=rf"precision '{precision}' is not offered on {device}"):
        check_precision(precision, device)
    with pytest.raises(ConfigError) as e:
        check_precision(precision, device)
    assert offered in str(e.value)


def test_precision_in_the_configuration_the_space_and_the_settings(tmp_path):
    c = Candidate(sparsity=0.5, precision="int8")
    assert not c.is_baseline and Candidate().is_baseline
    assert c.describe() == "s=0.5 N=1 int8"
    assert Candidate.from_dict({"sparsity": 0.5, "mux": 1}).precision == "fp32"  # older record
    assert Candidate(sparsity=0.5).below(c) and not c.below(Candidate(sparsity=0.5))
    space = SearchSpace.from_dict(
        {
            "params": {
                "sparsity": {"choices": [0.0, 0.5]},
                "precision": {"choices": ["fp32", "int8"]},
            }
        }
    )
    grid = space.grid()
    assert {g.precision for g in grid} == {"fp32", "int8"} and len(grid) == 4
    with pytest.raises(ConfigError, match=r"params.precision.choices' \('int4'\) must be one of"):
        SearchSpace.from_dict({"params": {"precision": {"choices": ["int4"]}}})
    SearchSettings(space=space, device="cpu")
    half = SearchSpace.from_dict({"params": {"precision": {"choices": ["fp32", "bf16"]}}})
    with pytest.raises(ConfigError, match="searches precision 'bf16' is not offered on cpu"):
        SearchSettings(space=half, device="cpu")


def test_the_meta_model_learns_that_int8_pays_and_costs():
    ctx = {
        "task_num_labels": 2,
        "task_pair": 0,
        "task_mcc": 0,
        "task_log_train": 9.0,
        "baseline_metric": 85.0,
        "model_layers": 6,
        "model_hidden": 384,
        "model_log_params": 16.7,
        "device_cuda": 0,
    }
    rows = []
    for s in (0.0, 0.3, 0.5, 0.7):
        base_loss, base_speed = 10 * s**2, 1 / (1 - s)
        rows.append((Candidate(sparsity=s), ctx, base_loss, base_speed))
        rows.append(
            (Candidate(sparsity=s, precision="int8"), ctx, base_loss + 0.8, base_speed * 1.5)
        )
    X, y = training_table(rows)
    meta = MetaModel().fit(X, y)
    fp32 = meta.predict([features(Candidate(sparsity=0.6), ctx)])[0]
    int8 = meta.predict([features(Candidate(sparsity=0.6, precision="int8"), ctx)])[0]
    assert int8[0] > fp32[0] and int8[1] > 1.3 * fp32[1]
    # the int8 baseline is a configuration, not the baseline: it is predicted, not defined
    q0 = meta.predict([features(Candidate(precision="int8"), ctx)])[0]
    assert q0[1] > 1.3 and q0[0] > 0.3


def test_the_pipeline_scores_and_times_the_converted_model(tiny_checkpoint, tmp_path):
    pipe = PruMuxPipeline(
        task="sst2",
        model=tiny_checkpoint,
        recipe=Recipe(**TINY_RECIPE),
        data_dir=str(DATA),
        cache_dir=tmp_path / "cache",
    )
    fp32 = pipe.evaluate(Candidate(sparsity=0.3), throughput=TP)
    int8 = pipe.evaluate(Candidate(sparsity=0.3, precision="int8"), throughput=TP)
    assert int8.candidate.name == "s=0.3,N=1,int8" and fp32.candidate.name == "s=0.3,N=1"
    # the same cached fp32 candidate underneath, converted: the same size and sparsity
    assert int8.candidate.sparsity == fp32.candidate.sparsity
    assert int8.candidate.encoder_params == fp32.candidate.encoder_params
    assert abs(int8.candidate.metric - fp32.candidate.metric) <= 10.0
    with pytest.raises(ConfigError, match="not offered on cpu"):
        pipe.evaluate(Candidate(sparsity=0.3, precision="fp16"), throughput=TP)
    assert set(PRECISIONS) >= {"fp32", "int8"}


def test_a_search_over_precision_records_it_in_each_trial_and_its_mlflow_run(
    tiny_checkpoint, tmp_path
):
    from test_search import mlflow_trial_runs, settings, tiny_space

    space = tiny_space(
        tiny_checkpoint,
        sparsity={"choices": [0.3]},
        mux={"choices": [1]},
        precision={"choices": ["fp32", "int8"]},
    )
    s = settings(space, tmp_path, trials=2, sampler="grid")
    searcher = Searcher(s)
    searcher.run()
    trials = searcher.finished()
    assert sorted(t.user_attrs["config"]["precision"] for t in trials) == ["fp32", "int8"]
    runs = mlflow_trial_runs(s.tracking_uri, searcher.name)
    assert sorted(r.data.params["precision"] for r in runs) == ["fp32", "int8"]
    assert all(t.state.name == "COMPLETE" for t in trials)


def test_int8_rounds_each_output_channel_on_its_own():
    """One outlier row must not coarsen the others: per output channel, the ordinary rows stay
    within 5% of fp32 (the 7-bit inputs cost most of it); one step for the whole tensor would
    be 100x coarser for them, rounding most of their weights to 0."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(64, 32)).eval()
    with torch.no_grad():
        lin[0].weight[0] *= 100
    x = torch.randn(16, 64)
    cal = _calibration(lin, (x,))
    with torch.inference_mode():
        ref, out = lin(x), to_precision(lin, "int8", calibration=cal)(x)
    rest = (out - ref)[:, 1:].abs().max()
    assert rest <= 0.05 * ref[:, 1:].abs().max(), rest
    with torch.inference_mode(), fake_int8(lin, cal):
        fake = lin(x)
    assert (fake - out).abs().max() <= 1e-3 * ref.abs().max()  # the emulation rounds alike


@pytest.mark.parametrize("n", [1, 2])
def test_fake_int8_computes_as_the_int8_conversion_and_trains_the_fp32_weights(n):
    m = _model(n, pruned=True)
    ids, mask, tt = random_batch(8, 16, seed=2)
    cal = _calibration(m)
    with torch.inference_mode():
        int8 = to_precision(m, "int8", calibration=cal)(ids, mask, tt)
        plain = m(ids, mask, tt)
    with torch.inference_mode(), fake_int8(m, cal):
        fake = m(ids, mask, tt)
    # the emulation rounds as the conversion does: far closer to it than fp32 is
    assert (fake - int8).abs().max() <= 1e-4 + 0.05 * (plain - int8).abs().max()
    # a step inside the block trains the fp32 weights (straight-through), which stay plain after
    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    before = first.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    with fake_int8(m, cal):
        m(ids, mask, tt).pow(2).mean().backward()
        opt.step()
    assert type(first) is torch.nn.Linear and isinstance(first.weight, torch.nn.Parameter)
    assert not torch.equal(first.weight.detach(), before)
    assert set(m.state_dict()) == set(_model(n, pruned=True).state_dict())


def test_int8_recovery_distils_the_candidate_as_int8_and_is_cached_apart(tiny_checkpoint, tmp_path):
    def pipe(steps: int) -> PruMuxPipeline:
        return PruMuxPipeline(
            task="sst2",
            model=tiny_checkpoint,
            recipe=Recipe(**{**TINY_RECIPE, "int8_recovery_steps": steps}),
            data_dir=str(DATA),
            cache_dir=tmp_path / "cache",
        )

    cfg = Candidate(sparsity=0.3, precision="int8")
    plain, recovered = pipe(0), pipe(3)
    assert plain.trained(cfg) is not None and not (tmp_path / "cache" / "int8_recovered").exists()
    a = plain.trained(cfg).state_dict()
    b = recovered.trained(cfg).state_dict()
    assert set(a) == set(b) and any(not torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "cache" / "int8_recovered").iterdir())) == 1
    # fp32 configurations and the fp32 candidate underneath are untouched by the setting
    fp32 = Candidate(sparsity=0.3)
    assert all(torch.equal(v, recovered.trained(fp32).state_dict()[k]) for k, v in a.items())
    ev = recovered.evaluate(cfg, throughput=TP)
    assert ev.candidate.name == "s=0.3,N=1,int8"
    with pytest.raises(ConfigError, match="int8_recovery_steps"):
        Recipe(int8_recovery_steps=10, trainer="l2l")


def _items(count: int, seed: int):
    """`count` texts of varied lengths (4..40 tokens) as encoded items."""
    from autoprumux.data import Encoded

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = int(torch.randint(4, 41, (1,), generator=g))
        ids = [2, *torch.randint(5, 99, (n - 2,), generator=g).tolist(), 3]
        out.append(Encoded(tuple(ids), (0,) * n, i % 2))
    return out


@pytest.mark.parametrize("pruned", [False, True])
def test_an_int8_label_depends_only_on_its_text_not_on_its_batch(pruned):
    """Batch 1, 16 and 64, in the given order and shuffled: the same logits (to fp32 rounding)
    and the same labels. With one activation scale per batch (dynamic int8) a text's logits
    moved with its neighbours by the quantization step, and labels flipped."""
    from autoprumux.models import calibration_batches

    m = _model(1, pruned=pruned)
    items = _items(128, seed=5)
    q = to_precision(m, "int8", calibration=calibrate_int8(m, calibration_batches(_items(64, 6))))
    runs = logits_by_batching(q, items)
    for r in runs[1:]:
        assert (r - runs[0]).abs().max() <= 1e-5, (r - runs[0]).abs().max()
        assert torch.equal(r.argmax(-1), runs[0].argmax(-1))


def logits_by_batching(model, items) -> list[torch.Tensor]:
    """`model`'s logits for `items` at batch 1, 16 and 64, in the given order and shuffled,
    each put back in the items' order."""
    from autoprumux.training import predict

    runs = []
    with torch.inference_mode():
        for batch in (1, 16, 64):
            for shuffled in (False, True):
                order = torch.randperm(len(items), generator=torch.Generator().manual_seed(batch))
                order = order if shuffled else torch.arange(len(items))
                logits = predict(model, [items[i] for i in order], batch_size=batch)
                restored = torch.empty_like(logits)
                restored[order] = logits
                runs.append(restored)
    return runs


def test_static_int8_kernel_equals_its_integer_arithmetic():
    """oneDNN's int8 kernel computes exactly the integers the layer rounds to (what the
    fallback without oneDNN multiplies in fp32), for any number of rows, at the input codes
    this CPU is given (8 bits with VNNI/AMX; 7 bits on AVX2, whose pair sums would saturate)."""
    from autoprumux.models._precision import activation_qmax

    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 40)
    layer = StaticInt8Linear(lin, -3.0, 5.0, qmax=activation_qmax())
    for rows in (1, 7, 130):
        x = torch.rand(rows, 48) * 8 - 3  # inside the calibrated range
        with torch.inference_mode():
            got = layer(x)
            q = layer.quantize_input(x).float() - layer.zero_point
            want = (q * layer.scale) @ (layer.w_int8.float() * layer.w_scale[:, None]).T + lin.bias
        assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))
        assert (got - lin(x)).abs().max() <= 0.05 * float(lin(x).abs().max())


def test_int8_without_its_calibration_or_with_another_models_is_refused():
    m = _model(1, pruned=False)
    with pytest.raises(ValueError, match="calibrat"):
        to_precision(m, "int8")
    other = _calibration(_model(1, pruned=False))
    bad = Int8Calibration({k: v for k, v in list(other.ranges.items())[1:]}, other.examples)
    with pytest.raises(ValueError, match="another model"):
        to_precision(m, "int8", calibration=bad)
    assert Int8Calibration.from_dict(other.to_dict()) == other
    for broken in ({}, {"examples": 0, "ranges": {}}, {"examples": 3, "ranges": {"a": [2, 1]}}):
        with pytest.raises(ValueError):
            Int8Calibration.from_dict(broken)
