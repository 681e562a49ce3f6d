"""Evaluate one PruMUX configuration end to end, beside its baseline.

    baseline  = base model fine-tuned on the task (N=1, sparsity 0)          [cached]
    mux model = base model + retrieval warm-up(N) + task fine-tune (N)        [cached per N]
    candidate = (baseline | mux model) pruned to the sparsity + recovery fine-tune with
                distillation from the baseline                               [cached]
Accuracy is measured on the dev split; throughput of baseline and candidate side by side in the
same process on the same device, so speedup is a ratio from one run.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from autoprumux._cache import ArtifactCache, key_hash
from autoprumux.config import Recipe, validate_candidate
from autoprumux.data import Encoded, Example, TaskData, collate, encode, get_task, load_task
from autoprumux.errors import ConfigError, DataNotFoundError
from autoprumux.evaluation import (
    ThroughputConfig,
    fixed_batch,
    model_flops,
    model_runner,
    resolve_device,
    task_metrics,
    time_interleaved,
)
from autoprumux.models import (
    AnyModel,
    MuxConfig,
    MuxSequenceClassifier,
    StudentConfig,
    StudentEnsemble,
    apply_plan,
    compute_importance,
    resolve_model,
    search_plan,
)
from autoprumux.models._loading import BaseModel
from autoprumux.training import (
    StudentTrainConfig,
    TrainConfig,
    distill_students,
    predict,
    retrieval_warmup,
    train_classifier,
)

log = logging.getLogger("autoprumux")

# seeded orders of the dev set a multiplexed model is scored on (see `dev_metrics`)
DEV_PAIRINGS = 5


def warm_start_from(model: MuxSequenceClassifier, smaller: MuxSequenceClassifier) -> None:
    """Initialise an N-way model from an N/2-way one: encoder, demultiplexer and retrieval head
    are copied; index embeddings 0..N/2-1 and the shared "no index" row are copied, the new
    indices keep their fresh draws. The fixed mixing transforms are not parameters."""
    if smaller.n >= model.n or smaller.n < 2:
        raise ConfigError(
            f"warm start needs a smaller multiplexed model, got N={smaller.n} -> {model.n}"
        )
    model.encoder.load_state_dict(smaller.encoder.state_dict())
    model.demux.load_state_dict(smaller.demux.state_dict())
    model.retrieval_head.load_state_dict(smaller.retrieval_head.state_dict())
    with torch.no_grad():
        k = smaller.n
        model.index_embeddings.weight[:k] = smaller.index_embeddings.weight[:k]
        model.index_embeddings.weight[model.n] = smaller.index_embeddings.weight[k]


@dataclass(frozen=True)
class Measured:
    """One evaluated model: dev metrics (points), throughput and size."""

    name: str
    sparsity: float
    n: int
    metric: float
    accuracy: float
    throughput: float  # examples / s
    latency_ms: float  # median time of one batch
    encoder_params: int
    flops: float  # per batch of the throughput config
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    task: str
    metric_name: str
    device: str
    baseline: Measured
    candidate: Measured
    throughput_config: ThroughputConfig

    @property
    def accuracy_loss(self) -> float:
        return self.baseline.metric - self.candidate.metric

    @property
    def speedup(self) -> float:
        return self.candidate.throughput / self.baseline.throughput

    @property
    def ideal_speedup(self) -> float:
        """Speedup implied by the FLOP reduction alone."""
        return self.baseline.flops / self.candidate.flops

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric_name": self.metric_name,
            "device": self.device,
            "baseline": asdict(self.baseline),
            "candidate": asdict(self.candidate),
            "accuracy_loss": self.accuracy_loss,
            "speedup": self.speedup,
            "ideal_speedup": self.ideal_speedup,
            "throughput_config": asdict(self.throughput_config),
        }


def describe_model(model: AnyModel) -> dict:
    """The shape of a measured model, for reports and MLflow."""
    if isinstance(model, StudentEnsemble):
        return {
            "technique": "students",
            "students": model.k,
            "active_students": model.active_students,
            "depth": model.depth,
        }
    return {
        "technique": "prumux",
        "layers": len(model.encoder.layers),
        "heads": list(model.encoder.config.heads),
        "ffn": list(model.encoder.config.ffn),
    }


def _read_text_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}); pass a text file with one "
            "sentence per line"
        ) from None


class PruMuxPipeline:
    """Builds, caches and measures the baseline and PruMUX candidates for one (model, task, recipe)."""

    def __init__(
        self,
        *,
        task: str = "sst2",
        model: str | None = None,
        recipe: Recipe | None = None,
        device: str = "cpu",
        data_dir: str | None = None,
        data_source: str = "local",
        cache_dir: str | Path | None = None,
        mux_variant: str = "gaussian",
        warmup_corpus: str = "shared",
    ):
        self.task = get_task(task)
        self.data_dir = data_dir
        self.warmup_corpus = warmup_corpus
        if warmup_corpus not in ("shared", "task"):  # a file: checked before any work
            corpus = Path(warmup_corpus).expanduser()
            if not corpus.is_file():
                raise ConfigError(
                    f"warm-up corpus {warmup_corpus!r} is not 'shared', 'task' or an existing "
                    "text file (one sentence per line)"
                )
            _read_text_file(corpus, "warm-up corpus")
        self.recipe = recipe or Recipe()
        self.device = resolve_device(device)
        self.mux_variant = MuxConfig(n=1, variant=mux_variant).variant
        self.base: BaseModel = resolve_model(model)
        self.cache = ArtifactCache(cache_dir)
        self.data: TaskData = load_task(
            self.task.name,
            data_dir=data_dir,
            source=data_source,
            max_train_examples=self.recipe.max_train_examples,
            seed=self.recipe.seed,
        )
        self.tokenizer = self.base.tokenizer()
        self.train_items = encode(self.data.train, self.tokenizer, self.recipe.max_seq_len)
        self.dev_items = encode(self.data.dev, self.tokenizer, self.recipe.max_seq_len)
        self.special_ids = tuple(
            i
            for i in (
                self.tokenizer.cls_token_id,
                self.tokenizer.sep_token_id,
                self.tokenizer.pad_token_id,
            )
            if i is not None
        )
        self._baseline: MuxSequenceClassifier | None = None
        self._warmup_items: list[Encoded] | None = None
        self._corpus_digest: str | None = None
        self._baseline_metrics: dict[str, float] | None = None
        self._mux_metrics: dict[int, dict[str, float]] = {}
        self._warned_short_baseline = False

    # ---- cache keys --------------------------------------------------------------------------
    def _key(self, **extra: object) -> dict:
        r = self.recipe
        return {
            "model": self.base.model_id,
            "task": self.task.name,
            "data": self.data.fingerprint(),
            "max_seq_len": r.max_seq_len,
            "batch_size": r.batch_size,
            "lr": r.lr,
            "finetune_steps": r.finetune_steps,
            "freeze_word_embeddings": r.freeze_word_embeddings,
            "seed": r.seed,
            # L2L equals gradient accumulation over its micro-batches (own dropout streams):
            # keyed only when used, so the standard loop's cache entries keep their keys
            **(
                {"trainer": r.trainer, "l2l_micro_batches": r.l2l_micro_batches}
                if r.trainer != "standard"
                else {}
            ),
            **extra,
        }

    def _mux_key(self, n: int) -> dict:
        r = self.recipe
        return self._key(
            n=n,
            variant=self.mux_variant,
            mux_warmup_steps=r.mux_warmup_steps,
            mux_warmup_lr=r.mux_warmup_lr,
            mux_finetune_steps=r.mux_finetune_steps,
            mux_finetune_lr=r.mux_finetune_lr,
            retrieval_weight=r.retrieval_weight,
            distill_weight=r.distill_weight,
            mux_pooling=r.mux_pooling,
            mux_hidden_distill=r.mux_hidden_distill,
        )

    def _fresh(self, n: int) -> MuxSequenceClassifier:
        torch.manual_seed(self.recipe.seed)
        pooling = self.recipe.mux_pooling if n > 1 else "cls"
        m = MuxSequenceClassifier(
            self.base.build_encoder(),
            num_labels=self.task.num_labels,
            mux=MuxConfig(n=n, variant=self.mux_variant, seed=self.recipe.seed, pooling=pooling),
        )
        if self.recipe.freeze_word_embeddings:
            m.encoder.embeddings.word.weight.requires_grad_(False)
        return m

    def _train_cfg(self, steps: int, **kw: object) -> TrainConfig:
        r = self.recipe
        kw.setdefault("lr", r.lr)
        return TrainConfig(
            steps=steps,
            batch_size=r.batch_size,
            seed=r.seed,
            trainer=r.trainer,
            micro_batches=r.l2l_micro_batches,
            stash=r.l2l_stash,
            **kw,  # type: ignore[arg-type]
        )

    @staticmethod
    def _load(entry: Path, freeze_words: bool) -> MuxSequenceClassifier:
        m = MuxSequenceClassifier.load(entry / "model")
        if freeze_words:
            m.encoder.embeddings.word.weight.requires_grad_(False)
        return m.eval()

    # ---- stages ------------------------------------------------------------------------------
    def baseline(self) -> MuxSequenceClassifier:
        if self._baseline is not None:
            return self._baseline

        def build(tmp: Path) -> dict:
            m = self._fresh(1)
            stats = train_classifier(
                m,
                self.train_items,
                self._train_cfg(self.recipe.finetune_steps),
                desc="baseline fine-tune",
                device=self.device,
            )
            m.save(tmp / "model")
            return {"train": stats}

        entry, hit = self.cache.get_or_build("baseline", self._key(), build)
        log.info("baseline %s (%s)", "cache hit" if hit else "trained", entry)
        self._baseline = self._load(entry, self.recipe.freeze_word_embeddings)
        return self._baseline

    def warmup_sentences(self) -> list[Encoded]:
        """Unlabeled sentences for the retrieval warm-up (each side of a pair is one sentence).

        `warmup_corpus`: "shared" (default) = the training text of SST-2, CoLA and MRPC found in
        the GLUE directory (the current task's text when reading from the hub); "task" = this
        task's training text; anything else = a UTF-8 text file, one sentence per line.
        """
        if self._warmup_items is not None:
            return self._warmup_items
        texts: list[str] = []
        src = self.warmup_corpus
        if src in ("shared", "task"):
            sets = [self.data]
            if src == "shared" and not self.data.source.startswith("hf:"):
                sets = []
                for name in ("sst2", "cola", "mrpc"):
                    try:
                        sets.append(load_task(name, data_dir=self.data_dir))
                    except DataNotFoundError:
                        log.info("warm-up corpus: %s not found, skipped", name)
                if not sets:
                    sets = [self.data]
            for td in sets:
                for ex in td.train:
                    texts.append(ex.text_a)
                    if ex.text_b:
                        texts.append(ex.text_b)
        else:
            path = Path(src).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"warm-up corpus {src!r} is not 'shared', 'task' or an existing text file "
                    "(one sentence per line)"
                )
            texts = [line.strip() for line in _read_text_file(path, "warm-up corpus").splitlines()]
        texts = sorted({t for t in texts if t})  # dedup; sorted so the sample is reproducible
        if not texts:
            raise ConfigError(f"warm-up corpus {src!r} holds no sentences")
        k = min(self.recipe.warmup_corpus_size, len(texts))
        rng = torch.Generator().manual_seed(self.recipe.seed)
        pick = torch.randperm(len(texts), generator=rng)[:k].tolist()
        self._warmup_items = encode(
            [Example(texts[i], None, 0) for i in pick], self.tokenizer, self.recipe.max_seq_len
        )
        return self._warmup_items

    def _corpus_hash(self) -> str:
        """Content hash of the warm-up sentences (computed once; part of every warm-up key)."""
        if self._corpus_digest is None:
            h = hashlib.sha256()
            for x in self.warmup_sentences():
                h.update(repr(x.input_ids).encode())
            self._corpus_digest = h.hexdigest()[:16]
        return self._corpus_digest

    def _warmup_key(self, n: int) -> dict:
        r = self.recipe
        extra: dict = {}
        if r.warmup_hidden_distill:
            extra["hidden_distill"] = r.warmup_hidden_distill
        if r.warmup_from_smaller and n >= 4:
            extra["start_from"] = key_hash(self._warmup_key(n // 2))
        return {
            **extra,
            "model": self.base.model_id,
            "n": n,
            "variant": self.mux_variant,
            "steps": r.mux_warmup_steps,
            "lr": r.mux_warmup_lr,
            "batch_size": r.batch_size,
            "max_seq_len": r.max_seq_len,
            "freeze_word_embeddings": r.freeze_word_embeddings,
            "seed": r.seed,
            "corpus": self._corpus_hash(),
        }

    def mux_warmup(self, n: int) -> tuple[Path, dict]:
        """The token-retrieval warm-up for width N: task-independent, cached per
        (base model, N, mux variant, recipe, corpus) and reused by every task and sparsity.
        Returns (cache entry, its metadata incl. cost in seconds and final retrieval accuracy)."""
        if n < 2:
            raise ConfigError(f"the warm-up is for N >= 2, got N={n}")
        r = self.recipe
        sentences = self.warmup_sentences()
        key = self._warmup_key(n)

        def build(tmp: Path) -> dict:
            m = self._fresh(n)
            started = None
            if r.warmup_from_smaller and n >= 4:
                smaller, _ = self.mux_warmup(n // 2)
                warm_start_from(m, MuxSequenceClassifier.load(smaller / "model"))
                started = n // 2
            teacher = self._fresh(1) if r.warmup_hidden_distill else None
            stats = retrieval_warmup(
                m,
                sentences,
                TrainConfig(
                    steps=r.mux_warmup_steps,
                    batch_size=r.batch_size,
                    lr=r.mux_warmup_lr,
                    seed=r.seed,
                ),
                special_ids=self.special_ids,
                desc=f"mux warm-up N={n}",
                device=self.device,
                teacher=teacher,
                hidden_distill_weight=r.warmup_hidden_distill,
            )
            m.save(tmp / "model")
            return {"warmup": stats, "corpus_sentences": len(sentences), "started_from_n": started}

        entry, hit = self.cache.get_or_build("warmup", key, build)
        meta = ArtifactCache.meta(entry)
        log.info(
            "warm-up N=%d %s (%s): %.0fs, retrieval accuracy %.3f",
            n,
            "cache hit" if hit else "trained",
            entry,
            meta["warmup"]["seconds"],
            meta["warmup"]["retrieval_accuracy"],
        )
        return entry, {**meta, "key": key, "cache_hit": hit}

    def _start_model(self, n: int) -> tuple[MuxSequenceClassifier, dict]:
        """An N-way model to fine-tune: warmed up (cached) when the recipe asks for it."""
        if not self.recipe.mux_warmup_steps:
            return self._fresh(n), {}
        entry, meta = self.mux_warmup(n)
        m = self._load(entry, self.recipe.freeze_word_embeddings)
        m.mux_config = replace(m.mux_config, pooling=self.recipe.mux_pooling)
        if m.num_labels != self.task.num_labels:  # the warm-up never trains the task head
            m.num_labels = self.task.num_labels
            m.classifier = torch.nn.Linear(m.classifier.in_features, self.task.num_labels)
        return m, meta

    def mux_model(self, n: int) -> MuxSequenceClassifier:
        """Unpruned N-way multiplexed model trained on the task (cached per N, reused across sparsities)."""
        if n == 1:
            return self.baseline()
        teacher = self.baseline()
        r = self.recipe
        if r.finetune_steps < r.mux_finetune_steps and not self._warned_short_baseline:
            self._warned_short_baseline = True  # once per pipeline: a search asks per trial
            log.warning(
                "the baseline's fine-tune (finetune_steps=%d) is shorter than the N > 1 models' "
                "(mux_finetune_steps=%d): their accuracy loss is understated against a baseline "
                "trained as long; give the baseline at least as many steps",
                r.finetune_steps,
                r.mux_finetune_steps,
            )
        warm_key = key_hash(self._warmup_key(n)) if r.mux_warmup_steps else None

        def build(tmp: Path) -> dict:
            m, warm = self._start_model(n)
            meta: dict = {"warmup": warm.get("warmup"), "warmup_cache_hit": warm.get("cache_hit")}
            meta["train"] = train_classifier(
                m,
                self.train_items,
                self._train_cfg(
                    r.mux_finetune_steps,
                    retrieval_weight=r.retrieval_weight,
                    distill_weight=r.distill_weight,
                    hidden_distill_weight=r.mux_hidden_distill,
                    lr=r.mux_finetune_lr,
                ),
                teacher=teacher,
                special_ids=self.special_ids,
                desc=f"mux fine-tune N={n}",
                device=self.device,
            )
            m.save(tmp / "model")
            return meta

        entry, hit = self.cache.get_or_build("mux", {**self._mux_key(n), "warmup": warm_key}, build)
        log.info("mux N=%d %s (%s)", n, "cache hit" if hit else "trained", entry)
        return self._load(entry, r.freeze_word_embeddings)

    def prune(
        self,
        model: MuxSequenceClassifier,
        sparsity: float,
        *,
        desc: str = "",
        on_stage: Callable[[int, float], None] | None = None,
    ) -> dict:
        """Prune `model` in place to `sparsity` in `prune_stages` steps, each followed by recovery
        fine-tuning with distillation from the baseline. Returns per-stage stats.

        Each stage's dev metric is recorded in its stats; `on_stage(stage, metric)` is called
        with it after the stage's recovery (e.g. to report an intermediate accuracy to a search
        pruner; it may raise to abandon the candidate)."""
        r = self.recipe
        teacher = self.baseline()
        stats: list[dict] = []
        n = model.n
        gen = torch.Generator().manual_seed(r.seed)
        for stage in range(1, r.prune_stages + 1):
            target = sparsity * stage / r.prune_stages
            order = torch.randperm(len(self.train_items), generator=gen).tolist()
            fisher_items = [self.train_items[i] for i in order[: r.importance_examples]]
            fisher_batches = [
                collate(fisher_items[s : s + n]) for s in range(0, len(fisher_items) - n + 1, n)
            ]
            abl_items = [
                self.train_items[i]
                for i in order[r.importance_examples : r.importance_examples + 128]
            ]
            abl_batches = [collate(abl_items[s : s + 32]) for s in range(0, len(abl_items), 32)]

            def loss_fn(b: dict[str, torch.Tensor]) -> torch.Tensor:
                b = {k: v.to(self.device) for k, v in b.items()}
                return F.cross_entropy(
                    model(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"]
                )

            model.to(self.device)
            imp = compute_importance(model.encoder, loss_fn, fisher_batches, abl_batches)
            plan = search_plan(model.encoder, imp, target, model.original_prunable_params)
            apply_plan(model.encoder, plan)
            steps = r.recovery_steps // r.prune_stages + (
                r.recovery_steps % r.prune_stages if stage == r.prune_stages else 0
            )
            tr = train_classifier(
                model,
                self.train_items,
                self._train_cfg(
                    steps,
                    distill_weight=r.distill_weight,
                    retrieval_weight=r.retrieval_weight if n > 1 else 0.0,
                ),
                teacher=teacher,
                special_ids=self.special_ids,
                desc=f"recover{desc} stage {stage}/{r.prune_stages}",
                device=self.device,
            )
            stats.append(
                {
                    "target": target,
                    "sparsity": model.sparsity(),
                    "heads": list(model.encoder.config.heads),
                    "ffn": list(model.encoder.config.ffn),
                    "train": tr,
                    "dev_metric": self.dev_metrics(model, pairings=1)["metric"],
                }
            )
            if on_stage is not None:
                on_stage(stage, stats[-1]["dev_metric"])
        return {"stages": stats}

    def candidate(
        self,
        sparsity: float,
        n: int,
        *,
        on_stage: Callable[[int, float], None] | None = None,
    ) -> MuxSequenceClassifier:
        """The pruned (and, for N > 1, multiplexed) candidate, built or taken from the cache.
        `on_stage(stage, dev metric)` is called for stage 0 (the unpruned model, N > 1 only) and
        after each pruning stage, the same way on a cache hit (the stages' metrics are recorded
        with the entry), so a search stops or keeps a configuration whether it was cached or
        not."""
        sparsity, n = validate_candidate(sparsity, n)
        self.check_lengths(n)
        if n > 1 and on_stage is not None:
            on_stage(0, self.mux_metrics(n)["metric"])
        if sparsity == 0.0:
            return self.mux_model(n)
        r = self.recipe
        key = {
            **self._mux_key(n),
            "sparsity": sparsity,
            "recovery_steps": r.recovery_steps,
            "prune_stages": r.prune_stages,
            "importance_examples": r.importance_examples,
        }

        def build(tmp: Path) -> dict:
            m = copy.deepcopy(self.mux_model(n))
            meta = self.prune(m, sparsity, desc=f" s={sparsity:g} N={n}", on_stage=on_stage)
            got = m.sparsity()
            if abs(got - sparsity) > 0.02:
                raise RuntimeError(
                    f"pruning reached sparsity {got:.3f}, not within 2 points of the target {sparsity}"
                )
            m.save(tmp / "model")
            return meta

        entry, hit = self.cache.get_or_build("candidate", key, build)
        log.info("candidate s=%g N=%d %s (%s)", sparsity, n, "cache hit" if hit else "built", entry)
        model = self._load(entry, r.freeze_word_embeddings)
        if hit and on_stage is not None:
            stages = self.cache.meta(entry).get("stages", [])
            for stage, st in enumerate(stages, start=1):
                metric = st.get("dev_metric")
                if metric is None:  # an entry written before stage metrics were recorded
                    last = stage == len(stages)
                    metric = self.dev_metrics(model, pairings=1)["metric"] if last else None
                if metric is not None:
                    on_stage(stage, float(metric))
        return model

    # ---- Academus students --------------------------------------------------------------------
    def students(self, k: int, depth: int) -> StudentEnsemble:
        """K boosted students of `depth` layers distilled from the baseline, built or cached."""
        cfg = StudentConfig(k=k, depth=depth)
        r = self.recipe
        key = self._key(
            technique="students",
            k=cfg.k,
            depth=cfg.depth,
            student_steps=r.student_steps,
            student_stacking_steps=r.student_stacking_steps,
            student_lr=r.student_lr,
        )

        def build(tmp: Path) -> dict:
            ens, stats = distill_students(
                self.baseline(),
                self.train_items,
                cfg,
                StudentTrainConfig(
                    steps_per_student=r.student_steps,
                    stacking_steps=r.student_stacking_steps,
                    batch_size=r.batch_size,
                    lr=r.student_lr,
                    stacking_lr=r.student_lr / 4,
                    seed=r.seed,
                    trainer=r.trainer,
                    micro_batches=r.l2l_micro_batches,
                    stash=r.l2l_stash,
                ),
                device=self.device,
                heldout=self.dev_items[:256],
            )
            ens.save(tmp / "model", extra={"distillation": stats})
            return {"distillation": stats}

        entry, hit = self.cache.get_or_build("students", key, build)
        log.info("students K=%d d=%d %s (%s)", k, depth, "cache hit" if hit else "built", entry)
        return StudentEnsemble.load(entry / "model").to(self.device)

    def evaluate_students(
        self,
        k: int,
        depth: int,
        *,
        active: int | None = None,
        throughput: ThroughputConfig | None = None,
    ) -> Evaluation:
        """K students of `depth` layers (the first `active` of them) beside the baseline."""
        tp = throughput or ThroughputConfig(device=str(self.device))
        self.check_lengths(1, tp)
        self.baseline()  # first: the students distil it
        ens = self.students(k, depth)
        if active is not None:
            ens.active_students = active
        name = f"K={k},d={depth}" + (f",active={active}" if active is not None else "")
        return self.beside_baseline(name, ens, tp)

    # ---- measurement -------------------------------------------------------------------------
    def dev_metrics(self, model: AnyModel, pairings: int = DEV_PAIRINGS) -> dict[str, float]:
        """Dev metrics in points. A multiplexed model (N > 1) mixes the examples of each group
        of N, so its predictions depend on which examples share a group: its metrics are the
        mean over `DEV_PAIRINGS` seeded shufflings of the dev set (taken from a canonical order,
        so the file's order does not matter), with `metric_std` their spread (0 for N=1, whose
        predictions do not depend on the order). Intermediate reports to a search pruner use
        one pairing (`pairings=1`): they only decide whether to go on."""
        gold = [x.label for x in self.dev_items]
        n = getattr(model, "n", 1)
        if n == 1:
            logits = predict(model, self.dev_items, batch_size=64, device=self.device)
            return {**task_metrics(self.task.metric, logits, gold), "metric_std": 0.0}
        canonical = sorted(
            range(len(self.dev_items)),
            key=lambda i: (self.dev_items[i].input_ids, self.dev_items[i].token_type_ids, gold[i]),
        )
        runs = []
        for seed in range(pairings):
            g = torch.Generator().manual_seed(seed)
            order = torch.tensor(canonical)[torch.randperm(len(canonical), generator=g)]
            logits = predict(
                model, [self.dev_items[i] for i in order], batch_size=64, device=self.device
            )
            restored = torch.empty_like(logits)
            restored[order] = logits
            runs.append(task_metrics(self.task.metric, restored, gold))
        out = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        spread = torch.tensor([r["metric"] for r in runs]).std() if len(runs) > 1 else 0.0
        out["metric_std"] = float(spread)
        return out

    def mux_metrics(self, n: int) -> dict[str, float]:
        """Dev metrics (one pairing) of the unpruned N-way model, for a search pruner's step 0
        (computed once per pipeline and N)."""
        if n not in self._mux_metrics:
            self._mux_metrics[n] = self.dev_metrics(self.mux_model(n), pairings=1)
        return self._mux_metrics[n]

    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def dev_size(self) -> int:
        return len(self.dev_items)

    def descriptors(self) -> dict[str, float]:
        """What the meta-model knows of the task, the base model and the device."""
        from autoprumux.models import Encoder

        cfg = self.base.config
        return {
            "task_num_labels": self.task.num_labels,
            "task_pair": int(self.task.pair),
            "task_mcc": int(self.task.metric == "mcc"),
            "task_log_train": round(math.log(max(1, len(self.data.train))), 6),
            "model_layers": len(cfg.heads),
            "model_hidden": cfg.hidden_size,
            "model_log_params": round(math.log(Encoder(cfg).prunable_parameters()), 6),
            "device_cuda": int(str(self.device).startswith("cuda")),
        }

    def throughput_batch(self, cfg: ThroughputConfig) -> dict[str, torch.Tensor]:
        b = collate(self.dev_items[: cfg.batch_size], pad_to=cfg.seq_len)
        return fixed_batch(b["input_ids"], b["attention_mask"], b["token_type_ids"], cfg)

    def measure_many(
        self,
        models: dict[str, tuple[AnyModel, dict[str, float] | None]],
        tp: ThroughputConfig,
        extra_callables: dict[str, tuple[Callable[[], object], int]] | None = None,
    ) -> tuple[dict[str, Measured], dict[str, float]]:
        """Dev metrics of each model, and throughputs of all of them timed side by side
        (interleaved rounds, see `time_interleaved`). `extra_callables` are timed in the same
        rounds (e.g. a reference implementation); their throughputs are returned separately."""
        batch = self.throughput_batch(tp)
        fns = {name: model_runner(m, batch, tp.device) for name, (m, _) in models.items()}
        fns.update(extra_callables or {})
        timed = time_interleaved(fns, cfg=tp)
        out = {}
        for name, (model, metrics) in models.items():
            metrics = metrics or self.dev_metrics(model)
            res = timed[name]
            out[name] = Measured(
                name=name,
                sparsity=round(model.sparsity(), 4),
                n=model.n,
                metric=metrics["metric"],
                accuracy=metrics["accuracy"],
                throughput=res.examples_per_second,
                latency_ms=res.latency_ms,
                encoder_params=model.prunable_parameters()
                if isinstance(model, StudentEnsemble)
                else model.encoder.prunable_parameters(),
                flops=model_flops(model, tp.batch_size, tp.seq_len),
                extra={"metrics": metrics, **describe_model(model)},
            )
        others = {k: timed[k].examples_per_second for k in (extra_callables or {})}
        return out, others

    def measure(
        self,
        name: str,
        model: MuxSequenceClassifier,
        tp: ThroughputConfig,
        metrics: dict[str, float] | None = None,
    ) -> Measured:
        return self.measure_many({name: (model, metrics)}, tp)[0][name]

    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None:
        """Sequence lengths (+ the N-token mux prefix) must fit the model's position embeddings."""
        limit = self.base.config.max_position_embeddings
        prefix = n if n > 1 else 0
        for name, length in (
            ("max_seq_len", self.recipe.max_seq_len),
            ("throughput seq_len", tp.seq_len if tp else 0),
        ):
            if length + prefix > limit:
                raise ConfigError(
                    f"{name} ({length}) + mux prefix ({prefix}) exceeds the model's {limit} positions; "
                    f"use at most {limit - prefix}"
                )

    def baseline_metrics(self) -> dict[str, float]:
        """Dev metrics of the baseline (computed once per pipeline)."""
        if self._baseline_metrics is None:
            self._baseline_metrics = self.dev_metrics(self.baseline())
        return self._baseline_metrics

    def evaluate(
        self,
        sparsity: float,
        n: int,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: Callable[[int, float], None] | None = None,
    ) -> Evaluation:
        sparsity, n = validate_candidate(sparsity, n)
        tp = throughput or ThroughputConfig(device=str(self.device))
        self.check_lengths(n, tp)
        self.baseline()  # first: the candidate distils from it
        cand = self.candidate(sparsity, n, on_stage=on_stage)
        return self.beside_baseline(f"s={sparsity:g},N={n}", cand, tp)

    def beside_baseline(self, name: str, model: AnyModel, tp: ThroughputConfig) -> Evaluation:
        """Dev metric of `model` and its throughput timed side by side with the baseline."""
        measured, _ = self.measure_many(
            {"baseline": (self.baseline(), self.baseline_metrics()), name: (model, None)}, tp
        )
        return Evaluation(
            task=self.task.name,
            metric_name=self.task.metric,
            device=str(self.device),
            baseline=measured["baseline"],
            candidate=measured[name],
            throughput_config=tp,
        )
