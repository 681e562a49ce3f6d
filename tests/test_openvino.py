"""The OpenVINO precisions (ov-fp32, ov-int8): the model's graph run by OpenVINO predicts like
its torch source, ov-int8 is static (a label depends on its text alone) and calibrated on
training texts only, pruned models and students convert as they are, and what cannot convert
or is not installed is refused with the fix."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import random_batch, tiny_encoder
from test_precision import _items, _model, logits_by_batching
from test_search import DATA, TINY_RECIPE, TP

from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.config import check_precision
from autoprumux.errors import ConfigError
from autoprumux.models import (
    MuxConfig,
    MuxSequenceClassifier,
    OpenVinoClassifier,
    StudentConfig,
    StudentEnsemble,
    calibration_batches,
    to_openvino,
)
from autoprumux.search import SearchSpace


def _tiny_pipeline(checkpoint: str, tmp_path) -> PruMuxPipeline:
    return PruMuxPipeline(
        task="sst2",
        model=checkpoint,
        recipe=Recipe(**TINY_RECIPE),
        data_dir=str(DATA),
        cache_dir=tmp_path / "cache",
    )


def _calibration():
    return calibration_batches(_items(64, seed=6))


@pytest.mark.parametrize("pruned", [False, True])
def test_ov_fp32_computes_the_torch_models_logits(pruned):
    m = _model(1, pruned=pruned)
    ov = to_openvino(m, "ov-fp32", [], max_seq_len=64)
    assert isinstance(ov, OpenVinoClassifier) and ov.precision == "ov-fp32"
    for seed, length in ((1, 16), (2, 40), (3, 7)):
        ids, mask, tt = random_batch(5, length, seed=seed)
        with torch.inference_mode():
            want, got = m(ids, mask, tt), ov(ids, mask, tt)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-4, (got - want).abs().max()
    # attributes are the source's: the pipeline reads the model's shape through them
    assert ov.num_labels == m.num_labels and ov.encoder is m.encoder


@pytest.mark.parametrize("pruned", [False, True])
def test_ov_int8_is_static_a_label_depends_only_on_its_text_and_keeps_most_labels(pruned):
    """Batch 1, 16 and 64, in order and shuffled: the same labels (int8 scales fixed by the
    calibration, not by the batch) and logits within rounding; and ov-int8 keeps the fp32
    model's label on most texts while really computing something else."""
    from autoprumux.training import predict

    m = _model(1, pruned=pruned)
    items = _items(128, seed=5)
    q = to_openvino(m, "ov-int8", _calibration(), max_seq_len=64)
    with torch.inference_mode():
        fp32 = predict(m, items, batch_size=16)
    runs = logits_by_batching(q, items)
    for r in runs[1:]:
        assert (r - runs[0]).abs().max() <= 1e-3, (r - runs[0]).abs().max()
        assert torch.equal(r.argmax(-1), runs[0].argmax(-1))
    assert (runs[0] - fp32).abs().max() > 1e-6  # quantized: not the fp32 graph
    agree = (runs[0].argmax(-1) == fp32.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree


def test_students_convert_to_openvino():
    enc, _ = tiny_encoder(0)
    teacher = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=1)).eval()
    ens = StudentEnsemble.from_teacher(teacher, StudentConfig(k=2, depth=1)).eval()
    ov = to_openvino(ens, "ov-fp32", [], max_seq_len=64)
    ids, mask, tt = random_batch(4, 12, seed=3)
    with torch.inference_mode():
        assert (ov(ids, mask, tt) - ens(ids, mask, tt)).abs().max() <= 1e-4
    assert ov.prunable_parameters() == ens.prunable_parameters()


def test_an_openvino_precision_takes_n_1_only_refused_where_the_value_enters(tmp_path):
    with pytest.raises(ConfigError, match=r"'ov-int8'.*N=2.*does not export"):
        Candidate(mux=2, precision="ov-int8")
    assert Candidate(mux=1, precision="ov-int8").describe() == "s=0 N=1 ov-int8"
    space = {
        "name": "ov",
        "task": "sst2",
        "params": {"mux": {"choices": [1, 2]}, "precision": {"choices": ["fp32", "ov-int8"]}},
    }
    with pytest.raises(ConfigError, match=r"ov-int8.*N=2"):
        SearchSpace.from_dict(space)
    # torch's and OpenVINO's precisions are separate families: no order is assumed between them
    assert not Candidate(precision="int8").below(Candidate(precision="ov-int8"))
    assert Candidate(precision="ov-fp32").below(Candidate(sparsity=0.5, precision="ov-int8"))


def test_without_openvino_installed_the_precision_is_refused_with_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"needs nncf.*pip install 'autoprumux\[openvino\]'"):
        check_precision("ov-int8", "cpu")
    assert check_precision("int8", "cpu") == "int8"
    with pytest.raises(ConfigError, match="not offered on cuda"):
        check_precision("ov-fp32", "cuda")


def test_the_pipeline_calibrates_ov_int8_on_training_texts_never_dev(
    tiny_checkpoint, tmp_path, monkeypatch
):
    import autoprumux.pipeline._pipeline as pipeline_module

    seen: list = []

    def spy(model, precision, calibration, **kw):
        seen.extend(calibration)
        return to_openvino(model, precision, calibration, **kw)

    monkeypatch.setattr(pipeline_module, "to_openvino", spy)
    pipe = _tiny_pipeline(tiny_checkpoint, tmp_path)
    ev = pipe.evaluate(Candidate(sparsity=0.3, precision="ov-int8"), throughput=TP)
    assert ev.candidate.name == "s=0.3,N=1,ov-int8" and ev.speedup > 0
    fp32 = pipe.evaluate(Candidate(sparsity=0.3), throughput=TP)
    assert ev.candidate.encoder_params == fp32.candidate.encoder_params
    train = {it.input_ids for it in pipe.train_items}
    dev = {it.input_ids for it in pipe.dev_items} - train
    rows = [
        tuple(ids[: int(mask.sum())].tolist())
        for ids_b, mask_b, _ in seen
        for ids, mask in zip(ids_b, mask_b, strict=True)
    ]
    assert rows and all(r in train for r in rows) and not any(r in dev for r in rows)


# ---- the OpenVINO export ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        Candidate(sparsity=0.5, precision="ov-int8"),
        Candidate(technique="students", students=2, student_depth=1, precision="ov-fp32"),
    ],
    ids=["pruned-ov-int8", "students-ov-fp32"],
)
def test_an_openvino_export_is_the_measured_graph_and_loads_without_torch(
    tiny_checkpoint, tmp_path, config, monkeypatch
):
    import json

    import numpy as np
    from test_onnx_export import _run

    import autoprumux
    import autoprumux.pipeline._pipeline as pipeline_module
    from autoprumux.deploy import OPENVINO_FILES, OpenVinoPredictor, read_manifest
    from autoprumux.export import export_model
    from autoprumux.training import predict

    conversions: list[str] = []

    def counted(model, precision, *args, **kw):
        conversions.append(precision)
        return to_openvino(model, precision, *args, **kw)

    monkeypatch.setattr(pipeline_module, "to_openvino", counted)
    pipe = _tiny_pipeline(tiny_checkpoint, tmp_path)
    d = tmp_path / "export"
    export_model(pipe, config, d, throughput=TP)  # the default format: the one measured
    assert conversions == [config.precision]  # the graph evaluate measured is the one written
    m = read_manifest(d)
    assert m.model_format == "openvino" and set(OPENVINO_FILES) <= set(m.files)
    assert not (d / "model.safetensors").exists() and not (d / "model.onnx").exists()
    assert "OpenVINO IR" in (d / "README.md").read_text()
    pred = autoprumux.load(d, threads=1)
    assert isinstance(pred, OpenVinoPredictor)
    texts = [e.text_a for e in pipe.data.dev]
    measured = pipe.converted(pipe.fp32_model(config), config.precision)
    want = predict(measured, pipe.dev_items, batch_size=pred.batch_size)
    got = pred.logits(texts)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-3, rtol=0)
    code = f"""
        import json, sys
        import autoprumux
        out = autoprumux.load({str(d)!r}).predict({texts[:9]!r})
        print(json.dumps({{"labels": out.label_ids,
                          "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
    """
    r = _run(code, {"torch"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch"] == [] and out["labels"] == want[:9].argmax(-1).tolist()
    with pytest.raises(ConfigError, match="runs it as exported"):
        autoprumux.load(d, precision="fp32")


@pytest.mark.parametrize(
    "flags,what",
    [
        (["--precision", "ov-int8", "--format", "torch"], "exports as OpenVINO IR"),
        (["--precision", "ov-fp32", "--format", "onnx"], "exports as OpenVINO IR"),
        (["--precision", "int8", "--format", "openvino"], "holds the precisions"),
        (["--precision", "ov-int8", "--mux", "2"], "N=2"),
    ],
    ids=["ov-as-torch", "ov-as-onnx", "int8-as-openvino", "ov-N=2"],
)
def test_what_the_openvino_format_cannot_hold_is_refused_before_anything_is_written(
    tiny_checkpoint, tmp_path, capsys, flags, what
):
    from autoprumux.cli import main

    out = tmp_path / "out"
    argv = ["export", "--out", str(out), "--sparsity", "0.5", "--model", tiny_checkpoint]
    code = main([*argv, *flags, "--no-register", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    assert what in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_meta_model_tells_openvino_apart_from_torch_at_the_same_precision_rank():
    """ov-fp32 has fp32's rank: only the runtime feature tells it from the baseline (whose loss
    and speedup are defined, not predicted) and from torch's fp32 at the same sparsity."""
    from autoprumux.meta._model import MetaModel, features, training_table

    ctx = {
        "task_num_labels": 2, "task_pair": 0, "task_mcc": 0, "task_log_train": 9.0,
        "baseline_metric": 85.0, "model_layers": 6, "model_hidden": 384,
        "model_log_params": 16.7, "device_cuda": 0,
    }  # fmt: skip
    rows = []
    for s in (0.0, 0.3, 0.5, 0.7):
        loss, speed = 10 * s**2, 1 / (1 - s)
        rows.append((Candidate(sparsity=s), ctx, loss, speed))
        rows.append((Candidate(sparsity=s, precision="ov-fp32"), ctx, loss, speed * 2.2))
    meta = MetaModel().fit(*training_table(rows))
    torch_fp32, ov_fp32 = meta.predict(
        [
            features(Candidate(sparsity=0.6), ctx),
            features(Candidate(sparsity=0.6, precision="ov-fp32"), ctx),
        ]
    )
    assert ov_fp32[1] > 1.6 * torch_fp32[1]
    ov0 = meta.predict([features(Candidate(precision="ov-fp32"), ctx)])[0]
    assert ov0[1] > 1.6  # predicted, not the baseline's defined 1.0
