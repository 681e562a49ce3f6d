"""Shared fixtures: tiny random BERTs keep the unit tests fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("AUTOPRUMUX_PROGRESS", "0")
# under pytest-xdist each worker computes on one thread: two workers of two threads each would
# share two cores four ways
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# the real GLUE data the integration tests read: $AUTOPRUMUX_DATA, else ../shared/data/glue
# beside the project root (where autoprumux itself looks)
GLUE_DIR = Path(
    os.environ.get("AUTOPRUMUX_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before any test when the real data is missing: a suite whose integration tests
    skipped would pass without testing what users run."""
    if not GLUE_DIR.is_dir():
        pytest.exit(
            f"the GLUE data the integration tests read is not at {GLUE_DIR}: clone the project "
            "beside shared/ (shared/data/glue), or set AUTOPRUMUX_DATA to a GLUE-format "
            "directory (SST-2/, CoLA/, MRPC/, QNLI/)",
            returncode=4,
        )


def tiny_bert_config(**kw):
    from transformers import BertConfig

    base = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return BertConfig(**base)


def tiny_encoder(seed: int = 0, **kw):
    """An Encoder with the weights of a random transformers BertModel (returned too)."""
    from transformers import BertModel

    from autoprumux.models import Encoder, EncoderConfig

    torch.manual_seed(seed)
    cfg = tiny_bert_config(**kw)
    hf = BertModel(cfg).eval()
    enc = Encoder(EncoderConfig.from_bert_config(cfg))
    enc.load_bert_state_dict(hf.state_dict())
    return enc.eval(), hf


def ctrl_c_delivered() -> None:
    """`preexec_fn` of a child that a test interrupts with SIGINT: the default disposition, so
    the child's Python turns it into KeyboardInterrupt as under a terminal, even where this test
    run inherited SIGINT ignored (a shell's background job)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pipelines_per_task(checkpoint, recipe, cache_dir):
    """A function task -> one PruMuxPipeline over `checkpoint` and the shared GLUE data, made
    once per task, all sharing `cache_dir`."""
    from autoprumux import PruMuxPipeline

    made: dict = {}

    def get(task: str = "sst2"):
        if task not in made:
            made[task] = PruMuxPipeline(
                task=task,
                model=checkpoint,
                recipe=recipe,
                data_dir=str(GLUE_DIR),
                cache_dir=str(cache_dir),
            )
        return made[task]

    return get


def random_batch(b: int, length: int, *, vocab: int = 99, seed: int = 0, min_len: int = 3):
    """Token ids with varied real lengths, [CLS]=2 first, padding 0 after each row's length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, length), generator=g)
    lens = torch.randint(min_len, length + 1, (b,), generator=g)
    lens[0] = length
    mask = (torch.arange(length)[None] < lens[:, None]).long()
    ids[:, 0] = 2
    ids = ids * mask
    return ids, mask, torch.zeros_like(ids)


@pytest.fixture
def tiny():
    return tiny_encoder()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random BERT saved as a checkpoint directory, with the packaged model's tokenizer,
    so the whole pipeline runs in seconds."""
    from transformers import BertModel

    from autoprumux.models import resolve_model

    d = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(vocab_size=30522, max_position_embeddings=128)).save_pretrained(d)
    resolve_model(None).tokenizer().save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session", autouse=True)
def _new_mlflow_sqlite_stores_start_migrated(tmp_path_factory):
    """MLflow gives a new SQLite store its schema by running every migration, which costs
    seconds, and most tests open a new store. Here a new store's file starts as a copy of one
    store migrated once by the same MLflow (schema only: no experiment, so each store still
    makes its own default experiment). Tests still run against real MLflow SQLite stores; a file
    that already exists (even empty) is left to MLflow."""
    import shutil

    import mlflow.store.db.utils as db_utils

    template = tmp_path_factory.mktemp("mlflow_schema") / "mlflow.db"
    engine = db_utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{template}")
    db_utils._initialize_tables(engine)
    engine.dispose()
    create_engine = db_utils.create_sqlalchemy_engine_with_retry

    def from_template(db_uri: str):
        if db_uri.startswith("sqlite:///"):
            path = Path(db_uri.removeprefix("sqlite:///").split("?", 1)[0])
            if str(path) != ":memory:" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, path)
        return create_engine(db_uri)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(db_utils, "create_sqlalchemy_engine_with_retry", from_template)
        yield
