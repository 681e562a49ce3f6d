"""Student parallelism (Academus): K shallow students whose logits add up to the teacher's.

Each student is `depth` encoder layers (initialised from the teacher's lower layers, or from a
pruned model's: a snapshot of the pruning path, whose smaller layers make smaller students), a
pooler and a classifier; all students read the (frozen) embeddings of the model they start
from. The pooler reads the [CLS] state or the mean of the real tokens' states (`StudentConfig.pooling`): after a few of
the teacher's lowest layers the [CLS] state barely varies between sentences, so a student that
starts with a zero head on it can learn little more than a bias, while the token mean varies.
Boosting trains them one after another on the residual the earlier ones left, so the sum of any
prefix of k <= K students is itself a model: `active_students` can be lowered at run time
without retraining.

At inference the active students run as ONE batched computation: their weights are stacked
along a leading student axis and every projection is a batched matrix product, attention folds
the student axis into the batch of a single `scaled_dot_product_attention` call. Training runs
the students as ordinary modules; the stacked copy is rebuilt after any change.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autoprumux.config import MAX_STUDENTS, POOLINGS, STUDENT_DEPTHS, STUDENT_INITS
from autoprumux.errors import ConfigError
from autoprumux.models._encoder import (
    Embeddings,
    Encoder,
    EncoderConfig,
    EncoderLayer,
    attention_bias,
    pool_states,
)
from autoprumux.models._mux import MuxSequenceClassifier
from autoprumux.models._persist import read_model_dir, write_model_dir
from autoprumux.models._precision import StaticInt8Linear, count_parameters


@dataclass(frozen=True)
class StudentConfig:
    """K students of `depth` layers each; their pooler reads the [CLS] state or the token mean."""

    k: int = 4
    depth: int = 2
    pooling: str = "cls"

    def __post_init__(self) -> None:
        for name, v in (("students K", self.k), ("student depth", self.depth)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name} ({v!r}) must be an integer")
        if not 1 <= self.k <= MAX_STUDENTS:
            raise ConfigError(
                f"students K ({self.k}) must be between 1 and {MAX_STUDENTS}; e.g. --students 4"
            )
        if self.depth not in STUDENT_DEPTHS:
            raise ConfigError(
                f"student depth ({self.depth}) must be one of {list(STUDENT_DEPTHS)} "
                "(shallow students; the teacher keeps the full depth)"
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(f"student pooling ({self.pooling!r}) must be one of {list(POOLINGS)}")


def _real_tokens(bias: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, T) additive attention mask -> (B, T) 0/1 mask of the real tokens."""
    return bias[:, 0, 0, :] == 0


class Student(nn.Module):
    """`depth` encoder layers + pooler + classifier over shared embedding states."""

    def __init__(
        self,
        layers: Sequence[EncoderLayer],
        pooler: nn.Linear,
        classifier: nn.Linear,
        pooling: str = "cls",
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.pooler = pooler
        self.classifier = classifier
        self.pooling = pooling

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: embedding states (B, T, H); bias: additive mask (B, 1, 1, T). Returns logits."""
        for layer in self.layers:
            x = layer(x, bias)
        return self.classifier(
            torch.tanh(self.pooler(pool_states(x, _real_tokens(bias), self.pooling)))
        )


# a student layer's shape at one position: (heads, FFN units), None where pruning removed the
# sub-layer (it passes its input on)
LayerShape = tuple[int | None, int | None]


def _layer_shape(layer: EncoderLayer) -> LayerShape:
    return (
        layer.num_heads if layer.attn_present else None,
        layer.ffn_size if layer.ffn_present else None,
    )


def _check_layers(
    init: Encoder, depth: int, first: int = 0, shapes: list[LayerShape] | None = None
) -> list[LayerShape]:
    """The shapes of the `depth` layers of `init` a student starts from at layer `first`: for a
    student joining an ensemble, the same per position as its students' (`shapes`), since the
    batched path stacks each position's weights across students."""
    if depth >= len(init.layers):
        raise ConfigError(
            f"student depth ({depth}) must be below the {len(init.layers)} layers of the model "
            "the students start from"
        )
    span = range(first, first + depth)
    if first < 0 or span.stop > len(init.layers):
        raise ConfigError(
            f"a student of {depth} layers starting at layer {first} does not fit the "
            f"{len(init.layers)} layers of the model the students start from"
        )
    got = [
        _layer_shape(layer)
        for layer in list(init.layers)[first : span.stop]
        if isinstance(layer, EncoderLayer)
    ]
    if shapes is not None and got != shapes:
        raise ConfigError(
            f"a student starting at layer {first} has layer shapes {got} (heads, FFN units), "
            f"not its ensemble's {shapes}; with a pruned start use student_init 'bottom'"
        )
    return got


def student_first_layers(teacher_layers: int, k: int, depth: int, init: str) -> list[int]:
    """The teacher layer each of K students of `depth` layers starts from: the lowest for all
    ("bottom"), or spread evenly from the lowest to the highest that fits ("spread": students
    that start different, so that boosting has different functions to combine)."""
    if init not in STUDENT_INITS:
        raise ConfigError(f"student init ({init!r}) must be one of {list(STUDENT_INITS)}")
    if init == "bottom" or k == 1:
        return [0] * k
    top = teacher_layers - depth
    return [round(j * top / (k - 1)) for j in range(k)]


def _stacked_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float):
    # x (K, M, H); w, b (K, 1, H)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * w + b


class StudentEnsemble(nn.Module):
    """Embeddings (shared, from the teacher) + K boosted students; logits = sum of the active ones.

    Quacks like `MuxSequenceClassifier` where measurement needs it (`n`, `num_labels`,
    `sparsity()`, `prunable_parameters()`), so it is timed and scored by the same code.
    """

    n = 1

    def __init__(
        self,
        embeddings: Embeddings,
        students: Sequence[Student],
        *,
        encoder_config: EncoderConfig,
        num_labels: int,
        teacher_prunable_params: int,
    ):
        super().__init__()
        if not students:
            raise ConfigError("a student ensemble needs at least one student")
        self.embeddings = embeddings
        self.students = nn.ModuleList(students)
        self.encoder_config = encoder_config
        self.num_labels = num_labels
        self.teacher_prunable_params = teacher_prunable_params
        self._active = len(students)
        self._stack: dict[str, torch.Tensor] | None = None

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_teacher(
        cls, teacher: MuxSequenceClassifier, cfg: StudentConfig, *, first_only: bool = False
    ) -> StudentEnsemble:
        """K students initialised from the teacher's lower `depth` layers, pooler and classifier.

        The model they start from may be a pruned one (a snapshot of the pruning path): its
        layers are copied as they are, and the ensemble's sparsity stays counted against the
        unpruned teacher's layers (`original_prunable_params`).
        Students after the first start with a zero classifier: they add nothing until trained,
        so adding a student never changes the sum before it has learnt its residual.
        With `first_only`, only the first student is created (boosting appends the rest)."""
        if teacher.n != 1:
            raise ConfigError("the students' teacher must be an N=1 model")
        enc = teacher.encoder
        _check_layers(enc, cfg.depth)
        ens = cls(
            copy.deepcopy(enc.embeddings),
            [_student_from(teacher, cfg.depth, zero_head=False, pooling=cfg.pooling)],
            encoder_config=enc.config,
            num_labels=teacher.num_labels,
            teacher_prunable_params=teacher.original_prunable_params,
        )
        ens.embeddings.requires_grad_(False)
        if not first_only:
            for _ in range(cfg.k - 1):
                ens.add_student(teacher, cfg.depth)
        return ens

    def add_student(
        self, teacher: MuxSequenceClassifier, depth: int, first_layer: int = 0
    ) -> Student:
        """A student of `depth` layers copied from the teacher's, starting at `first_layer`,
        with a zero classifier (it adds nothing until trained)."""
        _check_layers(teacher.encoder, depth, first_layer, self.layer_shapes)
        s = _student_from(
            teacher, depth, zero_head=True, first_layer=first_layer, pooling=self.pooling
        )
        s = s.to(self.embeddings.word.weight.device)
        self.students.append(s)
        self._active = len(self.students)
        self._stack = None
        return s

    @property
    def k(self) -> int:
        return len(self.students)

    @property
    def depth(self) -> int:
        first = self.students[0]
        assert isinstance(first, Student)
        return len(first.layers)

    @property
    def layer_shapes(self) -> list[LayerShape]:
        """(heads, FFN units) of each student's layer at each position, None for a removed
        sub-layer: the same in every student (`_check_layers`)."""
        first = self.students[0]
        assert isinstance(first, Student)
        return [_layer_shape(layer) for layer in first.layers if isinstance(layer, EncoderLayer)]

    @property
    def pooling(self) -> str:
        first = self.students[0]
        assert isinstance(first, Student)
        return first.pooling

    # ---- active prefix ---------------------------------------------------------------------
    @property
    def active_students(self) -> int:
        return self._active

    @active_students.setter
    def active_students(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.students):
            raise ConfigError(
                f"active students ({k!r}) must be an integer between 1 and {len(self.students)}"
            )
        self._active = k

    # ---- forward -----------------------------------------------------------------------------
    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embeddings(input_ids, token_type_ids)
        return x, attention_bias(attention_mask, x.dtype)

    def student_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        active: int | None = None,
        parallel: bool | None = None,
    ) -> torch.Tensor:
        """Each active student's logits, (k, B, C). `parallel` defaults to True in eval mode
        (fp32 or half weights)."""
        k = self._active if active is None else active
        if not 1 <= k <= len(self.students):
            raise ConfigError(f"active ({k}) must be between 1 and {len(self.students)}")
        x, bias = self.embed(input_ids, attention_mask, token_type_ids)
        if parallel is None:
            # the batched path stacks fp32 weights; int8 students keep theirs packed
            parallel = not self.training and not self._packed_weights()
        if parallel:
            return self._parallel(x, bias, k)
        return torch.stack([s(x, bias) for s in list(self.students)[:k]])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        active: int | None = None,
    ) -> torch.Tensor:
        """Logits (B, C): the sum of the first `active` (default `active_students`) students."""
        return self.student_logits(input_ids, attention_mask, token_type_ids, active=active).sum(0)

    def _packed_weights(self) -> bool:
        # every student is converted alike: its first layer tells (cheap on every call)
        first = self.students[0]
        assert isinstance(first, Student)
        return any(isinstance(m, StaticInt8Linear) for m in first.layers[0].modules())

    # ---- the batched path --------------------------------------------------------------------
    def train(self, mode: bool = True) -> StudentEnsemble:
        self._stack = None  # weights may change: rebuild the stacked copy on the next eval call
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._stack = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _stacked(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        st = self._stack
        if st is not None and st["_probe"].device == device and st["_probe"].dtype == dtype:
            return st
        per = [_student_tensors(s) for s in self.students if isinstance(s, Student)]
        out = {name: torch.stack([t[name] for t in per]).to(device, dtype) for name in per[0]}
        out["_probe"] = torch.zeros((), device=device, dtype=dtype)
        self._stack = out
        return out

    def _parallel(self, x: torch.Tensor, bias: torch.Tensor, k: int) -> torch.Tensor:
        st = self._stacked(x.device, x.dtype)
        first = self.students[0]
        assert isinstance(first, Student)
        first = first.layers[0]
        assert isinstance(first, EncoderLayer)
        hd, eps, act = first.head_dim, self.encoder_config.layer_norm_eps, first.act
        b, t, h = x.shape
        # the shared input, viewed once per student
        h_all = x.reshape(1, b * t, h).expand(k, -1, -1)
        mask = bias.repeat(k, 1, 1, 1)  # (k*B, 1, 1, T)
        for i, (heads, units) in enumerate(self.layer_shapes):
            p = f"l{i}."
            if heads is not None:
                if heads:
                    qkv = torch.baddbmm(st[p + "qkv_b"][:k], h_all, st[p + "qkv_w"][:k])
                    qkv = qkv.view(k * b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
                    ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
                    ctx = ctx.transpose(1, 2).reshape(k, b * t, heads * hd)
                    a = torch.baddbmm(st[p + "out_b"][:k], ctx, st[p + "out_w"][:k])
                else:  # no head left: the output projection's bias alone
                    a = st[p + "attn_bias"][:k]
                h_all = _stacked_layer_norm(
                    h_all + a, st[p + "ln1_w"][:k], st[p + "ln1_b"][:k], eps
                )  # (k, B*T, H)
            if units is not None:
                if units:
                    f = act(torch.baddbmm(st[p + "in_b"][:k], h_all, st[p + "in_w"][:k]))
                    f = torch.baddbmm(st[p + "ff_b"][:k], f, st[p + "ff_w"][:k])
                else:
                    f = st[p + "ffn_bias"][:k]
                h_all = _stacked_layer_norm(
                    h_all + f, st[p + "ln2_w"][:k], st[p + "ln2_b"][:k], eps
                )
        read = pool_states(h_all.view(k, b, t, h), _real_tokens(bias), self.pooling)  # (k, B, H)
        pooled = torch.tanh(torch.baddbmm(st["pool_b"][:k], read, st["pool_w"][:k]))
        return torch.baddbmm(st["cls_b"][:k], pooled, st["cls_w"][:k])  # (k, B, C)

    # ---- size ----------------------------------------------------------------------------------
    def prunable_parameters(self, active: int | None = None) -> int:
        """Layer parameters of the active students (embeddings, poolers and heads excluded)."""
        k = self._active if active is None else active
        return sum(
            count_parameters(s.layers) for s in list(self.students)[:k] if isinstance(s, Student)
        )

    def sparsity(self) -> float:
        """1 - (active students' layer parameters) / (teacher's layer parameters).

        Negative when the students together hold more layer parameters than the teacher
        (e.g. 4 students of depth 2 against 6 layers: -0.33)."""
        return 1.0 - self.prunable_parameters() / self.teacher_prunable_params

    # ---- persistence -------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "format": "autoprumux.StudentEnsemble/1",
            "encoder": self.encoder_config.to_dict(),
            "num_labels": self.num_labels,
            "students": asdict(StudentConfig(k=self.k, depth=self.depth, pooling=self.pooling)),
            "teacher_prunable_params": self.teacher_prunable_params,
        }

    def save(self, directory: str | Path, *, extra: dict | None = None) -> Path:
        return write_model_dir(self, directory, self.config_dict(), extra)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> StudentEnsemble:
        cfg, sd = read_model_dir(directory, map_location)
        if cfg.get("format") != "autoprumux.StudentEnsemble/1":
            raise ValueError(
                f"{str(directory)!r} holds a {cfg.get('format')!r}, not a student ensemble"
            )
        ens = cls.from_config(cfg)
        ens.load_state_dict(sd)
        return ens

    @classmethod
    def from_config(cls, cfg: dict) -> StudentEnsemble:
        """The ensemble `config_dict()` describes, with fresh weights."""
        ecfg = EncoderConfig.from_dict(cfg["encoder"])
        sc = StudentConfig(**cfg["students"])
        h = ecfg.hidden_size
        students = [
            Student(
                [
                    EncoderLayer(
                        ecfg, ecfg.heads[i], ecfg.ffn[i], ecfg.attn_present[i], ecfg.ffn_present[i]
                    )
                    for i in range(sc.depth)
                ],
                nn.Linear(h, h),
                nn.Linear(h, int(cfg["num_labels"])),
                pooling=sc.pooling,
            )
            for _ in range(sc.k)
        ]
        ens = cls(
            Embeddings(ecfg),
            students,
            encoder_config=ecfg,
            num_labels=int(cfg["num_labels"]),
            teacher_prunable_params=int(cfg["teacher_prunable_params"]),
        )
        ens.embeddings.requires_grad_(False)
        return ens.eval()


def _student_tensors(s: Student) -> dict[str, torch.Tensor]:
    """One student's weights laid out for batched products: x @ W (H_in, H_out), bias (1, H)."""
    out: dict[str, torch.Tensor] = {}

    def lin(name: str, m: nn.Linear | None) -> None:
        assert m is not None
        out[name + "_w"] = m.weight.detach().t()
        out[name + "_b"] = m.bias.detach()[None]

    def norm(name: str, m: nn.LayerNorm) -> None:
        out[name + "_w"] = m.weight.detach()[None]
        out[name + "_b"] = m.bias.detach()[None]

    def sublayer(
        size: int, pair: tuple[str, str], mods: tuple, bias: nn.Parameter | None, bias_name: str
    ) -> None:
        # a sub-layer whose heads or units are all pruned keeps its output bias alone
        if size:
            lin(pair[0], mods[0])
            lin(pair[1], mods[1])
        else:
            assert bias is not None
            out[bias_name] = bias.detach()[None]

    for i, layer in enumerate(s.layers):
        assert isinstance(layer, EncoderLayer)
        p = f"l{i}."
        if layer.attn_present:
            qkv = (layer.qkv, layer.attn_out)
            sublayer(layer.num_heads, (p + "qkv", p + "out"), qkv, layer.attn_bias, p + "attn_bias")
            norm(p + "ln1", layer.attn_norm)
        if layer.ffn_present:
            ffn = (layer.ffn_in, layer.ffn_out)
            sublayer(layer.ffn_size, (p + "in", p + "ff"), ffn, layer.ffn_bias, p + "ffn_bias")
            norm(p + "ln2", layer.ffn_norm)
    lin("pool", s.pooler)
    lin("cls", s.classifier)
    return out


def _student_from(
    teacher: MuxSequenceClassifier,
    depth: int,
    *,
    zero_head: bool,
    first_layer: int = 0,
    pooling: str = "cls",
) -> Student:
    enc = teacher.encoder
    h = enc.config.hidden_size
    layers = [copy.deepcopy(enc.layers[i]) for i in range(first_layer, first_layer + depth)]
    pooler = nn.Linear(h, h)
    if enc.pooler is not None:
        pooler.load_state_dict(enc.pooler.state_dict())
    else:  # no pooler in the teacher: start at the identity-like tanh(x)
        with torch.no_grad():
            pooler.weight.copy_(torch.eye(h))
            pooler.bias.zero_()
    classifier = copy.deepcopy(teacher.classifier)
    if zero_head:
        with torch.no_grad():
            classifier.weight.zero_()
            classifier.bias.zero_()
    return Student(
        [layer for layer in layers if isinstance(layer, EncoderLayer)],
        pooler,
        classifier,
        pooling,
    )
