"""`PruMuxPipeline`: the stages of a configuration, built or cached (see the package doc)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from autoprumux._cache import ArtifactCache
from autoprumux.config import (
    OPENVINO_PRECISIONS,
    SPLIT_COMBINERS,
    Candidate,
    MuxShape,
    Recipe,
    check_precision,
)
from autoprumux.data import (
    DataSource,
    Encoded,
    TaskData,
    check_corpus,
    collate,
    encode,
    encode_corpus,
    load_task_data,
    resolve_task,
    warmup_texts,
)
from autoprumux.errors import ConfigError
from autoprumux.evaluation import (
    DevNoise,
    Evaluation,
    Measured,
    ThroughputConfig,
    fixed_batch,
    measure_side_by_side,
    paired_dev_metrics,
    resolve_device,
)
from autoprumux.models import (
    AnyModel,
    Int8Calibration,
    MuxConfig,
    MuxSequenceClassifier,
    StudentEnsemble,
    calibrate_int8,
    calibration_batches,
    resolve_model,
    to_openvino,
    to_precision,
)
from autoprumux.models._classifier import head_rows
from autoprumux.models._loading import BaseModel
from autoprumux.pipeline._baseline import (
    build_baseline,
    choosing_split,
    measure_baseline,
    noise_of,
    report_stage,
    resolve_max_seq_len,
    scored_beside_baseline,
    split_train,
    stage_losses,
    stage_scores,
    training_record,
    validated,
)
from autoprumux.pipeline._context import StageReport, TeacherTables
from autoprumux.pipeline._keys import cache_key, candidate_key, mux_key
from autoprumux.pipeline._mux import (
    early_mux_model,
    late_mux_model,
    mux_warmup,
    pruned_before_mux,
    pruned_late_mux_model,
)
from autoprumux.pipeline._path import (
    PathLevel,
    build_path,
    path_snapshot,
    served_snapshot,
    served_sparsity,
)
from autoprumux.pipeline._recovery import int8_recovered, prune, teacher_layers, teacher_logits
from autoprumux.pipeline._stages import stage_training
from autoprumux.pipeline._students import build_students, evaluate_students, precision_name
from autoprumux.training import TeacherLayers, resolve_autocast

log = logging.getLogger("autoprumux")

# seeded orders of the dev set a multiplexed model is scored on (see `dev_metrics`)
DEV_PAIRINGS = 5


class PruMuxPipeline:
    """Builds, caches and measures the baseline and PruMUX candidates for one (model, task, recipe)."""

    def __init__(
        self,
        *,
        task: str | None = None,
        data: DataSource | None = None,
        metric: str | None = None,
        pos_label: str | None = None,
        model: str | None = None,
        recipe: Recipe | None = None,
        device: str = "cpu",
        data_dir: str | None = None,
        data_source: str = "local",
        cache_dir: str | Path | None = None,
        mux_variant: str = "gaussian",
        warmup_corpus: str = "shared",
    ):
        # cheap: a bad choice fails before the model
        choice = resolve_task(task, data, metric, pos_label)
        self.data_dir = data_dir
        self.warmup_corpus = warmup_corpus
        check_corpus(warmup_corpus)  # a file: before any work
        self.recipe = recipe or Recipe()
        self.device = resolve_device(device)
        # the precision the training loops' forward runs in on this device (keyed: `_keys`)
        self.train_autocast = resolve_autocast(
            self.recipe.train_autocast, self.device, self.recipe.trainer
        )
        self.mux_variant = MuxConfig(n=1, variant=mux_variant).variant
        self.base: BaseModel = resolve_model(model)
        self.cache = ArtifactCache(cache_dir)
        self.data: TaskData = load_task_data(
            choice,
            recipe=self.recipe,
            metric=metric,
            pos_label=pos_label,
            data_dir=data_dir,
            source=data_source,
        )
        self.task = self.data.task
        # a given classifier's head rows in the task's class order (None: a trained baseline)
        self.head_rows: tuple[int, ...] | None = (
            head_rows(self.base.labels, self.task.label_names, self.base.name)
            if self.base.labels
            else None
        )
        self.tokenizer = self.base.tokenizer()
        # one resolved recipe from here on: its max_seq_len is the data's when left unset
        self.max_seq_len, self.max_seq_len_note = resolve_max_seq_len(
            self.recipe, self.data.train, self.tokenizer, self.base
        )
        self.recipe = replace(self.recipe, max_seq_len=self.max_seq_len)
        # the validation split chooses, the stopping split stops training (both choose what
        # trained nothing of its own: `choosing_split`); no stage trains on either
        split = split_train(self)
        self.train_items, self.validation_items, self.stopping_items = split[:3]
        self.untrained_texts, self.validation_note = split.untrained, split.note
        self.dev_items = encode(self.data.dev, self.tokenizer, self.max_seq_len)
        tok = self.tokenizer
        special = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
        self.special_ids = tuple(i for i in special if i is not None)
        self._baseline: MuxSequenceClassifier | None = None
        self._baseline_entry: Path | None = None
        self._warmup_items: list[Encoded] | None = None
        self.corpus_digest: str | None = None
        self._baseline_metrics: dict[str, float] | None = None
        self.tables = TeacherTables()
        self._mux_scores: dict[MuxShape, dict[str, float | None]] = {}
        self._checked_shapes: dict[Candidate, tuple[float, MuxShape]] = {}
        self._warned_short_baseline = False

    # ---- cache keys (see _keys) ----------------------------------------------------------------
    def entry_key(self, **extra: object) -> dict:
        return cache_key(self, **extra)

    def mux_entry_key(self, shape: MuxShape) -> dict:
        return mux_key(self, shape)

    def fresh_model(self, n: int) -> MuxSequenceClassifier:
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

    @staticmethod
    def load_model(entry: Path, freeze_words: bool) -> MuxSequenceClassifier:
        m = MuxSequenceClassifier.load(entry / "model")
        if freeze_words:
            m.encoder.embeddings.word.weight.requires_grad_(False)
        return m.eval()

    # ---- stages ------------------------------------------------------------------------------
    def baseline(self) -> MuxSequenceClassifier:
        """The given classifier as is, or the encoder fine-tuned on the task (see _baseline)."""
        if self._baseline is None:
            entry = self._baseline_entry = build_baseline(self)
            self._baseline = self.load_model(entry, self.recipe.freeze_word_embeddings)
        return self._baseline

    def baseline_entry(self) -> Path:
        """The baseline's cache entry (built first if need be)."""
        self.baseline()
        assert self._baseline_entry is not None
        return self._baseline_entry

    def baseline_training(self) -> dict | None:
        """How the trained baseline stopped (see `_baseline.training_record`)."""
        return training_record(self)

    def stage_training(self, config: Candidate) -> dict:
        """How `config`'s built training stages stopped (see `_stages.stage_training`)."""
        return stage_training(self, config)

    @property
    def baseline_origin(self) -> str:
        """ "given": the user's classifier, used as is; "trained": fine-tuned here."""
        return "trained" if self.head_rows is None else "given"

    def teacher_logits(self) -> torch.Tensor | None:
        """The baseline's logits for every training item (see `_recovery.teacher_logits`)."""
        return teacher_logits(self)

    def teacher_layers(self) -> TeacherLayers | None:
        """The baseline's per-layer states for every item (see `_recovery.teacher_layers`)."""
        return teacher_layers(self)

    def warmup_sentences(self) -> list[Encoded]:
        """Unlabeled sentences for the retrieval warm-up, from `warmup_corpus` (see
        `data.warmup_texts`). It reads no label and no teacher, so the validation split's texts
        stay in it and every task shares it."""
        if self._warmup_items is None:
            r, corpus = self.recipe, self.warmup_corpus
            texts = warmup_texts(corpus, self.data, self.data_dir, r.warmup_corpus_size, r.seed)
            self._warmup_items, self.corpus_digest = encode_corpus(
                texts, self.tokenizer, self.max_seq_len
            )
        return self._warmup_items

    def mux_warmup(self, n: int) -> tuple[Path, dict]:
        """The token-retrieval warm-up for width N (see `_mux.mux_warmup`)."""
        return mux_warmup(self, n)

    def mux_model(self, shape: MuxShape) -> MuxSequenceClassifier:
        """Unpruned multiplexed model trained on the task (cached per shape, reused across
        sparsities): early mixing from the warm-up, late multiplexing from the baseline."""
        if shape.n == 1:
            return self.baseline()
        self.baseline()  # first: the N-way models distil it
        r = self.recipe
        if shape.late:
            return self.load_model(late_mux_model(self, shape), r.freeze_word_embeddings)
        short = self.head_rows is None and r.finetune_steps < r.mux_finetune_steps
        if short and not self._warned_short_baseline:
            self._warned_short_baseline = True  # once per pipeline: a search asks per trial
            log.warning(
                "the baseline's fine-tune (finetune_steps=%d) is shorter than the N > 1 models' "
                "(mux_finetune_steps=%d): their accuracy loss is understated against a baseline "
                "trained as long; give the baseline at least as many steps",
                r.finetune_steps,
                r.mux_finetune_steps,
            )
        return self.load_model(early_mux_model(self, shape), r.freeze_word_embeddings)

    def prune(
        self,
        model: MuxSequenceClassifier,
        sparsity: float,
        *,
        desc: str = "",
        on_stage: StageReport | None = None,
    ) -> dict:
        """Prune `model` in place to `sparsity` with the recipe's recovery (see
        `_recovery.prune`). Returns per-stage stats."""
        return prune(self, model, sparsity, desc=desc, on_stage=on_stage)

    def path(self) -> list[PathLevel]:
        """The pruning path's levels, built or cached (see `_path.build_path`)."""
        return build_path(self)

    def path_snapshot(self, sparsity: float) -> MuxSequenceClassifier:
        """The path's model at the level `sparsity` (see `_path.path_snapshot`)."""
        return path_snapshot(self, sparsity)

    def candidate_entry_key(self, sparsity: float, shape: MuxShape) -> dict:
        return candidate_key(self, sparsity, shape)

    def fp32_model(self, config: Candidate) -> AnyModel:
        """Any configuration's fp32 model, as `evaluate` converts it: the students, or the
        PruMUX candidate (`trained`)."""
        if config.technique == "students":
            return self.students(config.students, config.student_depth)
        return self.trained(config)

    def trained(
        self, config: Candidate, *, on_stage: StageReport | None = None
    ) -> MuxSequenceClassifier:
        """The configuration's fp32 model, as its precision is converted from: the candidate,
        and for int8 with the recipe's `int8_recovery_steps`, distilled further while computing
        as int8 will (`fake_int8`; built or cached)."""
        model = self.candidate(config, on_stage=on_stage)
        if config.precision != "int8" or self.recipe.int8_recovery_steps == 0:
            return model
        return int8_recovered(self, config, model)

    def candidate(
        self, config: Candidate, *, on_stage: StageReport | None = None
    ) -> MuxSequenceClassifier:
        """The pruned (and, for N > 1, multiplexed) candidate, built or taken from the cache.
        `on_stage(stage, dev loss, validation loss)` for stage 0 (the unpruned model, N > 1 only)
        and each pruning stage, the same on a cache hit (the entry records the stages' metrics)."""
        (sparsity, shape), r = self.prumux_shape(config), self.recipe
        n = shape.n
        self.check_lengths(shape.prefix_positions)
        late_on_pruned = pruned_before_mux(r, sparsity, shape)
        # one step each (`last_stage`): a late model on its pruned N=1 model, or the path's
        # snapshot (built once for every level)
        if late_on_pruned or r.serves_from_path(sparsity, shape):
            if late_on_pruned:
                entry = pruned_late_mux_model(self, sparsity, shape)
                model = self.load_model(entry, r.freeze_word_embeddings)
            else:
                model = served_snapshot(self, sparsity)
            if on_stage is not None:
                report_stage(self, on_stage, 1, stage_scores(self, model))
            return model
        if n > 1 and on_stage is not None:
            report_stage(self, on_stage, 0, self.mux_scores(shape))
        if sparsity == 0.0:
            return self.mux_model(shape)
        key = self.candidate_entry_key(sparsity, shape)

        def build(tmp: Path) -> dict:
            m = copy.deepcopy(self.mux_model(shape))
            for p in m.parameters():  # pruning recovery trains the whole model
                p.requires_grad_(True)
            if r.freeze_word_embeddings:
                m.encoder.embeddings.word.weight.requires_grad_(False)
            desc = f" s={sparsity:g} N={n}{shape.suffix}"
            meta = self.prune(m, sparsity, desc=desc, on_stage=on_stage)
            got = m.sparsity()
            if abs(got - sparsity) > 0.02:
                raise RuntimeError(
                    f"pruning reached sparsity {got:.3f}, not within 2 points of the target {sparsity}"
                )
            m.save(tmp / "model")
            return {**meta, "scored_by": self.scoring}

        entry, hit = self.cache.get_or_build("candidate", key, build)
        how = "cache hit" if hit else "built"
        log.info("candidate s=%g N=%d%s %s (%s)", sparsity, n, shape.suffix, how, entry)
        model = self.load_model(entry, r.freeze_word_embeddings)
        if hit and on_stage is not None:
            meta = self.cache.meta(entry)
            stages = meta.get("stages", [])
            # stage metrics scored another way (metric, f1's positive class) are not this one's
            stale = meta.get("scored_by", self.scoring) != self.scoring
            for stage, st in enumerate(stages, start=1):
                if stale or "dev_metric" not in st or stage_losses(self, st) is None:
                    if stage < len(stages):  # scored another way, or before this was recorded
                        continue
                    st = stage_scores(self, model)
                report_stage(self, on_stage, stage, st)
        return model

    # ---- Academus students (built in _students) ---------------------------------------------
    def students(self, k: int, depth: int) -> StudentEnsemble:
        """K boosted students of `depth` layers distilled from the baseline, built or cached."""
        return build_students(self, k, depth)

    def evaluate_students(
        self,
        k: int,
        depth: int,
        *,
        active: int | None = None,
        throughput: ThroughputConfig | None = None,
        precision: str = "fp32",
    ) -> Evaluation:
        """K students of `depth` layers (the first `active` of them), converted to `precision`,
        beside the fp32 baseline."""
        return evaluate_students(self, k, depth, active, throughput, precision)[0]

    # ---- measurement -------------------------------------------------------------------------
    @property
    def scoring(self) -> list[str | None]:
        """How dev metrics are scored: [metric, f1's positive class or None]. Scoring trains
        nothing, so it is in no cache key; cached per-stage metrics record it (`candidate`)."""
        return [self.task.metric, self.task.pos_label]

    def dev_metrics(self, model: AnyModel, pairings: int = DEV_PAIRINGS) -> dict[str, float]:
        """Dev metrics in points; a multiplexed model's are the mean over `pairings` seeded
        pairings of the dev set (see `paired_dev_metrics`)."""
        return paired_dev_metrics(
            model,
            self.dev_items,
            self.task.metric,
            pairings=pairings,
            device=self.device,
            pos_label=self.task.positive,
        )

    def mux_scores(self, shape: MuxShape) -> dict[str, float | None]:
        """`stage_scores` of the unpruned multiplexed model, a search pruner's step 0 (computed
        once per pipeline and shape)."""
        if shape not in self._mux_scores:
            self._mux_scores[shape] = stage_scores(self, self.mux_model(shape))
        return self._mux_scores[shape]

    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def dev_size(self) -> int:
        return len(self.dev_items)

    @property
    def validation_size(self) -> int:
        """Examples in the validation split, which chooses (0: none, dev chooses)."""
        return len(self.validation_items)

    def descriptors(self) -> dict[str, float]:
        """What the meta-model knows of the task, the base model and the device."""
        return {
            **self.data.descriptors(),
            **self.base.descriptors(),
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
        return measure_side_by_side(
            models, self.throughput_batch(tp), tp, self.dev_metrics, extra_callables
        )

    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None:
        self.base.check_lengths(n, max_seq_len=self.max_seq_len, seq_len=tp.seq_len if tp else 0)

    def baseline_metrics(self) -> dict[str, float]:
        """Dev metrics of the baseline (computed once per pipeline, logged beside the noise)."""
        if self._baseline_metrics is None:
            self._baseline_metrics = measure_baseline(self)
        return self._baseline_metrics

    def dev_noise(self) -> DevNoise:
        """The dev set's majority-class rate and noise at the baseline's accuracy."""
        return noise_of(self, self.baseline_metrics())

    def check(self, config: Candidate) -> None:
        """Refuse a configuration this pipeline cannot build or run, before any training."""
        self.check_lengths(self.prumux_shape(config)[1].prefix_positions)
        check_precision(config.precision, str(self.device))

    def deployable(self, config: Candidate, *, on_stage: StageReport | None = None) -> AnyModel:
        """The configuration's model as it is scored, timed and served: built (or cached) in
        fp32, then converted to its precision."""
        self.check(config)
        return self.converted(self.trained(config, on_stage=on_stage), config.precision)

    def int8_calibration(self, model: AnyModel) -> Int8Calibration:
        """The input ranges of `model`'s int8 layers over a seeded sample of the training texts."""
        return calibrate_int8(model, self.calibration_set())

    def calibration_set(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The seeded sample of the training texts every int8 conversion calibrates on."""
        return calibration_batches(self.train_items, seed=self.recipe.seed)

    def converted(self, model: AnyModel, precision: str) -> AnyModel:
        """`model` converted to `precision`; int8 and ov-int8 calibrated on the same seeded
        sample of the training texts (`calibration_set`)."""
        if precision not in OPENVINO_PRECISIONS:
            cal = self.int8_calibration(model) if precision == "int8" else None
            return to_precision(model, precision, calibration=cal)
        limit = self.base.config.max_position_embeddings
        return to_openvino(model, precision, self.calibration_set(), max_seq_len=limit)  # type: ignore[return-value]

    def evaluate(
        self,
        config: Candidate,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: StageReport | None = None,
        active: int | None = None,
    ) -> Evaluation:
        """Any configuration beside the fp32 baseline: built (or cached) in fp32, converted,
        scored and timed as converted. A PruMUX one reports its pruning stages to `on_stage`
        (see `candidate`); students report none, and run their first `active` (default: all)."""
        ev, _ = self.evaluate_model(config, throughput=throughput, on_stage=on_stage, active=active)
        return ev

    def evaluate_model(
        self,
        config: Candidate,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: StageReport | None = None,
        active: int | None = None,
    ) -> tuple[Evaluation, AnyModel]:
        """`evaluate`, and the converted model it scored and timed, so an export writes that one
        rather than converting again."""
        if config.technique == "students":
            k, depth, p = config.students, config.student_depth, config.precision
            return evaluate_students(self, k, depth, active, throughput, p)
        sparsity, shape = self.prumux_shape(config)
        check_precision(config.precision, str(self.device))
        tp = throughput or ThroughputConfig(device=str(self.device))
        self.check_lengths(shape.prefix_positions, tp)
        self.baseline()  # first: the candidate distils from it
        cand = self.deployable(config, on_stage=on_stage)
        name = f"s={sparsity:g},N={shape.n}" + (
            f",k={shape.layers},{shape.combiner}" if shape.late else ""
        )
        name = precision_name(name, config.precision)
        split = choosing_split(self, self.recipe.trains_own_model(config))
        return self.beside_baseline(name, cand, tp, self.stage_training(config), split), cand

    def prumux_shape(self, config: Candidate) -> tuple[float, MuxShape]:
        """(sparsity, mux shape) of a PruMUX configuration this pipeline builds (its mux
        variant; mux_layers below the model's depth; a sparsity the pruning path serves one of
        its levels, and returned as that level), checked before any training, once per
        configuration: the stages that read it again take the checked shape."""
        if not isinstance(config, Candidate) or config not in self._checked_shapes:
            self._checked_shapes[config] = self._check_prumux(config)  # raises if it is not one
        return self._checked_shapes[config]

    def _check_prumux(self, config: Candidate) -> tuple[float, MuxShape]:
        if not isinstance(config, Candidate) or config.technique != "prumux":
            raise ConfigError(
                f"expected a PruMUX Candidate, got {config!r}; students go to evaluate_students"
            )
        if config.mux > 1 and config.mux_variant != self.mux_variant:
            raise ConfigError(
                f"{config.describe()} uses the {config.mux_variant} mux variant but this pipeline "
                f"builds {self.mux_variant}; make one with mux_variant={config.mux_variant!r}"
            )
        depth, hidden = self.base.config.num_layers, self.base.config.hidden_size
        if config.mux_layers >= depth:
            raise ConfigError(
                f"mux_layers ({config.mux_layers}) must be below the model's {depth} layers: at "
                f"least one layer runs on the combined instances; use 0..{depth - 1}"
            )
        if config.mux_combiner in SPLIT_COMBINERS and hidden % config.mux:
            raise ConfigError(
                f"the {config.mux_combiner} combiner splits the hidden size ({hidden}) into N={config.mux} "
                f"equal parts; choose an N that divides {hidden}, or mux_combiner 'binding'"
            )
        if config.mux_shape.late and self.recipe.trainer != "standard":
            raise ConfigError(
                f"{config.describe()}: late multiplexing (mux_layers > 0 or a learned "
                f"combiner) trains with the standard loop, not {self.recipe.trainer!r}; set the "
                "recipe's trainer to 'standard'"
            )
        return served_sparsity(self, config.sparsity, config.mux_shape), config.mux_shape

    def beside_baseline(
        self,
        name: str,
        model: AnyModel,
        tp: ThroughputConfig,
        training: dict | None = None,
        split: str = "validation",
    ) -> Evaluation:
        """Dev and validation metrics of `model`, its throughput timed beside the baseline's;
        `training`: how its stages stopped (`stage_training`); `split`: `choosing_split`."""
        dev, dev_se = scored_beside_baseline(self, model, "dev", DEV_PAIRINGS)
        measured, _ = self.measure_many(
            {"baseline": (self.baseline(), self.baseline_metrics()), name: (model, dev)}, tp
        )
        return Evaluation(
            task=self.task.name,
            metric_name=self.task.metric,
            pos_label=self.task.pos_label,
            device=str(self.device),
            throughput_config=tp,
            noise=self.dev_noise(),
            accuracy_loss_se=dev_se,
            baseline_origin=self.baseline_origin,
            baseline_training=self.baseline_training(),
            stage_training=training,
            **validated(self, measured["baseline"], measured[name], model, DEV_PAIRINGS, split),
        )
