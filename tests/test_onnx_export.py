"""`autoprumux export --format onnx` and its torch-free predictor on tiny random BERTs: the ONNX
graph reproduces the torch model's logits (pruned with uneven layers, students, text pairs),
`load` labels as the torch export does, without importing torch, and what cannot be exported
(int8, N > 1) or run (no onnxruntime) is refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pipelines_per_task, random_batch, tiny_encoder
from test_export import TINY_RECIPE
from test_search import TP, TP_ARGS

import autoprumux
from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.cli import main
from autoprumux.deploy import MANIFEST_FILE, ONNX_FILE, ExportManifest, OnnxPredictor, read_manifest
from autoprumux.errors import ConfigError
from autoprumux.export import export_model
from autoprumux.training import predict

# ONNX Runtime's fused fp32 kernels round differently from torch's (export._onnx)
TOL = 1e-4
INSTALL = "pip install 'autoprumux[onnx]'"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def pipes(tiny_checkpoint, cache):
    return pipelines_per_task(tiny_checkpoint, Recipe(**TINY_RECIPE), cache)


@pytest.fixture(scope="module")
def exports(pipes, tmp_path_factory):
    """Export directories, one per (task, configuration, format), made once per module."""
    made: dict[tuple[str, Candidate, str], Path] = {}
    root = tmp_path_factory.mktemp("onnx_exports")

    def get(task: str, config: Candidate, model_format: str = "onnx") -> Path:
        key = (task, config, model_format)
        if key not in made:
            out = root / f"{task}-{model_format}-{len(made)}"
            export_model(pipes(task), config, out, throughput=TP, model_format=model_format)
            made[key] = out
        return made[key]

    return get


def _texts(pipe: PruMuxPipeline) -> list:
    return [(e.text_a, e.text_b) if pipe.task.pair else e.text_a for e in pipe.data.dev]


def _torch_model(pipe: PruMuxPipeline, config: Candidate):
    if config.technique == "students":
        return pipe.students(config.students, config.student_depth)
    return pipe.trained(config)


CONFIGS = [
    ("sst2", Candidate()),
    ("sst2", Candidate(sparsity=0.5)),  # pruned: heads and FFN units kept differ by layer
    ("mrpc", Candidate(sparsity=0.5)),  # text pairs
    ("sst2", Candidate(technique="students", students=2, student_depth=1)),
]


@pytest.mark.parametrize("task,config", CONFIGS, ids=[f"{t}-{c.describe()}" for t, c in CONFIGS])
def test_an_onnx_export_reproduces_the_torch_models_logits(pipes, exports, task, config):
    pipe = pipes(task)
    d = exports(task, config)
    pred = autoprumux.load(d)
    assert isinstance(pred, OnnxPredictor) and pred.label_names == pipe.data.task.label_names
    m = read_manifest(d)
    assert m.model_format == "onnx" and ONNX_FILE in m.files
    # the ONNX format holds the graph, not the torch weights
    assert not (d / "model.safetensors").exists() and (d / ONNX_FILE).stat().st_size > 0
    texts = _texts(pipe)
    got = pred.logits(texts)
    want = predict(_torch_model(pipe, config), pipe.dev_items, batch_size=pred.batch_size)
    assert got.shape == tuple(want.shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), atol=TOL, rtol=0)
    assert pred.predict(texts).label_ids == want.argmax(-1).tolist()


def test_the_pruned_export_has_uneven_layers(pipes, exports):
    """What the pruned case above exported: layers of different widths, taken as they are."""
    config = Candidate(sparsity=0.5)
    enc = pipes("sst2").trained(config).encoder.config
    assert len(set(enc.heads)) > 1 or len(set(enc.ffn)) > 1, (enc.heads, enc.ffn)
    assert "FFN units kept per layer" in (exports("sst2", config) / "README.md").read_text()


def test_write_onnx_takes_a_model_with_removed_heads_and_a_removed_sublayer(tmp_path):
    """Layers of 2, 1 and no heads (the last without its attention sub-layer) and 16, 5 and 37
    FFN units, fed batches of other sizes and lengths than the export saw."""
    from autoprumux.config import GRAPH_INPUTS
    from autoprumux.deploy._onnx import require_onnxruntime
    from autoprumux.export._onnx import write_onnx
    from autoprumux.models import MuxConfig, MuxSequenceClassifier, PruningPlan, apply_plan

    enc, _ = tiny_encoder(0, num_hidden_layers=3)
    model = MuxSequenceClassifier(enc, num_labels=3, mux=MuxConfig(n=1)).eval()
    plan = PruningPlan(
        keep_heads=((0, 2), (1,), ()),
        keep_ffn=(tuple(range(16)), tuple(range(5)), tuple(range(37))),
        drop_attn=(False, False, True),
        drop_ffn=(False, False, False),
    )
    apply_plan(model.encoder, plan)
    assert model.encoder.config.heads == (2, 1, 0) and model.encoder.config.ffn == (16, 5, 37)
    path = write_onnx(model, tmp_path, max_seq_len=64)
    ort = require_onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [x.name for x in session.get_inputs()] == list(GRAPH_INPUTS)
    for b, length, seed in ((1, 5, 1), (7, 20, 2), (3, 64, 3)):
        ids, mask, tt = random_batch(b, length, seed=seed)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": tt}
        feed["token_type_ids"] = tt.numpy()
        (got,) = session.run(["logits"], feed)
        with torch.no_grad():
            want = model(ids, mask, tt).numpy()
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_load_labels_an_onnx_export_as_the_torch_export(pipes, exports):
    config = Candidate(sparsity=0.5)
    texts = _texts(pipes("sst2"))
    onnx = autoprumux.load(exports("sst2", config), batch_size=16)
    torch_ = autoprumux.load(exports("sst2", config, "torch"))
    got, want = onnx.predict(texts), torch_.predict(texts)
    assert got.labels == want.labels and len(got) == len(texts)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=TOL, rtol=0)
    # the inputs are checked as the torch predictor checks them
    with pytest.raises(ConfigError, match="wrap a single text in a list"):
        onnx.predict("one text")  # type: ignore[arg-type]
    assert len(onnx.predict([])) == 0


def test_the_onnx_session_threads_default_to_the_cores_and_can_be_set(exports):
    from autoprumux.deploy._onnx import default_threads

    d = exports("sst2", Candidate(sparsity=0.5))
    threads = autoprumux.load(d).session.get_session_options().intra_op_num_threads
    assert threads == default_threads()
    assert autoprumux.load(d, threads=1).session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ConfigError, match="threads"):
        autoprumux.load(d, threads=0)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        autoprumux.load(d, device="cuda")
    with pytest.raises(ConfigError, match="runs it as exported"):
        autoprumux.load(d, precision="int8")
    with pytest.raises(ConfigError, match="torch export"):
        autoprumux.load(exports("sst2", Candidate(sparsity=0.5), "torch"), threads=2)


def test_an_onnx_export_is_verified_before_it_is_run(exports, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(exports("sst2", Candidate(sparsity=0.5)), d)
    raw = bytearray((d / ONNX_FILE).read_bytes())
    raw[-1] ^= 1
    (d / ONNX_FILE).write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="differs from what export wrote"):
        autoprumux.load(d)
    # a graph that is not the manifest's model: the manifest (not digested) names 3 labels
    d = tmp_path / "labels"
    shutil.copytree(exports("sst2", Candidate(sparsity=0.5)), d)
    raw = json.loads((d / MANIFEST_FILE).read_text())
    (d / MANIFEST_FILE).write_text(json.dumps({**raw, "label_names": ["a", "b", "c"]}))
    with pytest.raises(ConfigError, match="it scores 2 classes but the manifest names 3"):
        autoprumux.load(d)


def test_the_self_check_refuses_a_tokenizer_that_differs_from_the_pipelines(
    pipes, tmp_path, monkeypatch
):
    """The torch-free tokenizer made to cut long texts from the left: the export is refused
    and nothing is written (dev texts longer than max_seq_len tokens are cut otherwise)."""
    from autoprumux.deploy import _tokenizer

    made = _tokenizer.JsonTokenizer.__init__

    def left(self, backend, *, truncation_side="right"):
        made(self, backend, truncation_side="left")

    monkeypatch.setattr(_tokenizer.JsonTokenizer, "__init__", left)
    out = tmp_path / "model"
    with pytest.raises(ConfigError, match="tokenizes dev example .* differently"):
        export_model(pipes("sst2"), Candidate(), out, throughput=TP, model_format="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_manifest_without_a_model_format_reads_as_torch(exports):
    raw = json.loads(
        (exports("sst2", Candidate(sparsity=0.5), "torch") / MANIFEST_FILE).read_text()
    )
    assert raw.pop("model_format") == "torch"
    assert ExportManifest.from_dict(raw).model_format == "torch"
    with pytest.raises(ConfigError, match="model_format 'tensorflow' is not one of"):
        ExportManifest.from_dict({**raw, "model_format": "tensorflow"})


# a finder placed first on sys.meta_path: the named packages cannot be imported
HIDE = """
import sys

class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ImportError(f"{{name}} is hidden by the test")
        return None

sys.meta_path.insert(0, Hidden())
"""


def _run(code: str, hidden: set[str]) -> subprocess.CompletedProcess:
    src = HIDE.format(hidden=hidden) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", src], capture_output=True, text=True, timeout=300, cwd=Path.cwd()
    )


def test_an_onnx_export_loads_and_predicts_without_torch(pipes, exports, tmp_path):
    d = exports("sst2", Candidate(sparsity=0.5))
    texts = [e.text_a for e in pipes("sst2").data.dev[:9]]
    want = autoprumux.load(d).predict(texts)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    code = f"""
        import json, sys
        import autoprumux
        from autoprumux.cli import main

        out = autoprumux.load({str(d)!r}).predict({texts!r})
        assert main(["predict", {str(d)!r}, "--input", {str(src)!r}, "--output", {str(out)!r}]) == 0
        print(json.dumps({{"labels": out.labels, "probabilities": out.probabilities,
                          "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
    """
    r = _run(code, {"torch"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["torch"] == []
    assert got["labels"] == want.labels
    np.testing.assert_allclose(got["probabilities"], want.probabilities, atol=1e-6, rtol=0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == want.labels
    # the finder does hide torch: a torch export cannot load there
    torch_dir = exports("sst2", Candidate(sparsity=0.5), "torch")
    r = _run(f"import autoprumux\nautoprumux.load({str(torch_dir)!r})\n", {"torch"})
    assert r.returncode != 0 and "torch is hidden by the test" in r.stderr


def test_without_onnxruntime_loading_or_exporting_onnx_is_refused(
    exports, tiny_checkpoint, tmp_path
):
    d = exports("sst2", Candidate(sparsity=0.5))
    r = _run(f"import autoprumux\nautoprumux.load({str(d)!r})\n", {"onnxruntime"})
    assert r.returncode != 0 and "ConfigError" in r.stderr and INSTALL in r.stderr, r.stderr
    out = tmp_path / "new"
    code = f"""
        from autoprumux.cli import main
        raise SystemExit(main(["export", "--out", {str(out)!r}, "--sparsity", "0.5",
                               "--model", {tiny_checkpoint!r}, "--format", "onnx",
                               "--no-register", "--cache-dir", {str(tmp_path / "cache")!r}]))
    """
    r = _run(code, {"onnxruntime"})
    assert r.returncode == 2 and INSTALL in r.stderr and "onnxruntime" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


REFUSED = [
    (["--precision", "int8"], "precision int8 does not export to ONNX", "--precision fp32"),
    (["--mux", "2"], "multiplexed model (N=2) does not export to ONNX", "--mux 1"),
]


@pytest.mark.parametrize("flags,what,fix", REFUSED, ids=["int8", "N=2"])
def test_what_onnx_cannot_hold_is_refused_before_anything_is_written(
    pipes, tiny_checkpoint, tmp_path, monkeypatch, capsys, flags, what, fix
):
    monkeypatch.chdir(tmp_path)
    argv = ["export", "--out", "new", "--sparsity", "0.5", *flags, "--format", "onnx"]
    argv += ["--model", tiny_checkpoint, "--cache-dir", str(tmp_path / "cache"), *TP_ARGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert what in err and f"export --format torch, or {fix}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no export, cache or MLflow store
    # the Python API refuses it alike, before the model is built
    config = Candidate(sparsity=0.5, precision="int8" if "int8" in flags else "fp32")
    if "--mux" in flags:
        config = Candidate(sparsity=0.5, mux=2)
    with pytest.raises(ConfigError, match=fix):
        export_model(pipes("sst2"), config, tmp_path / "api", throughput=TP, model_format="onnx")
    assert not (tmp_path / "api").exists()
