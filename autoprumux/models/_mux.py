"""Data multiplexing (DataMUX / MUX-PLMs) around the compact encoder, plus the task head.

Shapes: B examples form G = B / N groups; instance i of group g is row g*N + i. Each instance is
prefixed with N index positions (position i holds index embedding i, the others the shared
"no-index" embedding), embedded, its padding zeroed, then the N instances are mixed into one
sequence (G, N + L, H). After the encoder, instance i is read back by the index-embedding
demultiplexer: demux(h_t, h_i) = LN(GELU(W [h_t ; h_i])) where h_i is the output at prefix
position i. N = 1 bypasses all of this and is exactly the plain BERT classifier.

Late multiplexing (`MuxConfig.layers` = k > 0, after MUX-PLMs' contextual multiplexer and
RevMUX): the first k encoder layers run on each instance as in the N=1 model (one batched
computation over B' rows), then each instance's states get the index prefix and the N instances
are combined; the remaining layers run once per group. Combiners: "binding" (the fixed
Gaussian-Hadamard or orthogonal transforms, then the average), "concat" (a learned
projection of each instance to H/N, concatenated back to H) and "concat_skip" (concat, and the
demultiplexer adds a learned map of each instance's own states after the first k layers, which
never passed through the H/N squeeze).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autoprumux.config import MUX_COMBINERS, MUX_VARIANTS, POOLINGS, SPLIT_COMBINERS
from autoprumux.errors import ConfigError
from autoprumux.models._encoder import (
    Encoder,
    EncoderConfig,
    attention_bias,
    init_weights,
    pool_states,
)
from autoprumux.models._persist import read_model_dir, write_model_dir
from autoprumux.models._pruning import counted_sparsity


@dataclass(frozen=True)
class MuxConfig:
    n: int = 1
    variant: str = "gaussian"
    seed: int = 0  # seed of the fixed (not trained) mixing vectors / matrices
    # what the task head reads: the (demuxed) [CLS] state, or the mean of the instance's
    # (demuxed) token states over its real tokens
    pooling: str = "cls"
    layers: int = 0  # encoder layers run per instance before the N instances are combined
    combiner: str = "binding"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(
                f"mux width N ({self.n!r}) must be a positive integer (1 = no multiplexing)"
            )
        if self.variant not in MUX_VARIANTS:
            raise ConfigError(f"mux variant {self.variant!r} is not one of {list(MUX_VARIANTS)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r} is not one of {list(POOLINGS)}")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 0:
            raise ConfigError(
                f"mux_layers ({self.layers!r}) must be an integer >= 0 (0 = mix the embeddings)"
            )
        if self.combiner not in MUX_COMBINERS:
            raise ConfigError(f"mux combiner {self.combiner!r} is not one of {list(MUX_COMBINERS)}")
        if self.n == 1 and (self.layers or self.combiner != "binding"):
            raise ConfigError(
                f"mux_layers ({self.layers}) and mux_combiner ({self.combiner!r}) apply to "
                "multiplexed models only; use N > 1, or mux_layers 0 and combiner 'binding'"
            )


class Multiplexer(nn.Module):
    """Mixes N embedded instances (G, N, T, H) into one sequence (G, T, H) with fixed transforms."""

    def transform(self, x: torch.Tensor) -> torch.Tensor:  # (G, N, T, H) -> (G, N, T, H)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        return self.transform(x).sum(dim=1) / n


class GaussianHadamardMux(Multiplexer):
    """PruMUX/DataMUX: instance i is multiplied elementwise by a fixed vector v_i ~ N(0, I)."""

    def __init__(self, n: int, hidden: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vectors: torch.Tensor
        self.register_buffer("vectors", torch.randn(n, hidden, generator=g))  # (N, H)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.vectors[None, :, None, :]


class OrthogonalMux(Multiplexer):
    """Instance i is rotated by a fixed random orthogonal matrix W_i (H, H)."""

    def __init__(self, n: int, hidden: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(n, hidden, hidden, generator=g))
        # sign fix makes the draw uniform (Haar) over orthogonal matrices
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        self.matrices: torch.Tensor
        self.register_buffer("matrices", q)  # (N, H, H)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("gnth,nhk->gntk", x, self.matrices)


class ConcatCombiner(nn.Module):
    """Learned: instance i is projected to H/N by P_i (no bias, so padding stays zero) and the N
    projections are concatenated back to H (RevMUX's concatenation, without its coupling)."""

    def __init__(self, n: int, hidden: int, seed: int):
        super().__init__()
        if hidden % n:
            raise ConfigError(
                f"the concat combiner splits the hidden size ({hidden}) into N={n} equal parts; "
                f"choose an N that divides {hidden}, or combiner 'binding'"
            )
        g = torch.Generator().manual_seed(seed)
        # orthonormal columns: each output coordinate starts as a unit projection of the input,
        # so the combined states keep the scale of the per-instance ones
        q, _ = torch.linalg.qr(torch.randn(n, hidden, hidden, generator=g))
        self.projections = nn.Parameter(q[:, :, : hidden // n].contiguous())  # (N, H, H/N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (G, N, T, H) -> (G, T, H)
        g, n, t, _ = x.shape
        parts = torch.einsum("gnth,nhk->gtnk", x, self.projections)  # (G, T, N, H/N)
        return parts.reshape(g, t, -1)


def make_multiplexer(cfg: MuxConfig, hidden: int) -> nn.Module:
    """The combiner of N instances (G, N, T, H) -> (G, T, H)."""
    if cfg.combiner in SPLIT_COMBINERS:
        return ConcatCombiner(cfg.n, hidden, cfg.seed)
    if cfg.variant == "gaussian":
        return GaussianHadamardMux(cfg.n, hidden, cfg.seed)
    return OrthogonalMux(cfg.n, hidden, cfg.seed)


class IndexDemultiplexer(nn.Module):
    """demux(h_t, k_i) = LN(GELU(W [h_t ; k_i] + b) + S x_i,t), k_i the output at prefix position
    i; the skip term S x_i,t (combiner "concat_skip" only) maps instance i's own state at t after
    the per-instance layers. S starts at zero, so training starts from the plain concat model.

    W [h_t ; k_i] = W_t h_t + W_k k_i: the token half is computed once per mixed position and
    shared by the N instances, the key half once per instance, so reading back all N instances
    costs one H x H product per position whatever N is (plus N element-wise GELU + LayerNorms).
    """

    # it reads halves of its weight, which a quantized Linear does not expose (see to_precision)
    keeps_fp32_weights = True

    def __init__(self, hidden: int, eps: float, *, skip: bool = False):
        super().__init__()
        self.hidden = hidden
        self.proj = nn.Linear(2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.skip = nn.Linear(hidden, hidden, bias=False) if skip else None

    def forward(
        self, tokens: torch.Tensor, keys: torch.Tensor, instances: torch.Tensor | None = None
    ) -> torch.Tensor:
        # tokens (G, 1, P, H), keys (G, N, 1, H), instances (G, N, P, H) -> (G, N, P, H)
        h = self.hidden
        w = self.proj.weight
        mixed = F.gelu(F.linear(tokens, w[:, :h]) + F.linear(keys, w[:, h:], self.proj.bias))
        if self.skip is not None:
            if instances is None:
                raise ValueError("the concat_skip demultiplexer reads each instance's own states")
            mixed = mixed + self.skip(instances)
        return self.norm(mixed)


class RetrievalHead(nn.Module):
    """Predicts an instance's token from its demuxed state; decoder tied to the word embeddings."""

    def __init__(self, hidden: int, vocab: int, eps: float):
        super().__init__()
        self.transform = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.transform(states))), word_embeddings, self.bias)


def _last_layer_norm(encoder: Encoder) -> nn.LayerNorm | None:
    for layer in reversed(encoder.layers):
        for name in ("ffn_norm", "attn_norm"):
            norm = getattr(layer, name, None)
            if isinstance(norm, nn.LayerNorm):
                return norm
    return None


@dataclass(frozen=True)
class MuxLayout:
    """What `MuxSequenceClassifier.layout` derives from a batch (no parameters involved)."""

    ids: torch.Tensor  # (B', L): rows padded with dummies to a multiple of N
    token_types: torch.Tensor  # (B', L)
    token_mask: torch.Tensor  # (B', N + L) prefix + token mask per instance; (B, L) for N=1
    bias: torch.Tensor  # (rows, 1, 1, T) additive attention mask of the encoder's rows
    batch_size: int  # real examples B
    # (B', 1, 1, L) additive mask of each instance alone, for the per-instance layers (k > 0)
    instance_bias: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        extra = [self.instance_bias] if self.instance_bias is not None else []
        return [self.ids, self.token_types, self.token_mask, self.bias, *extra]


class MuxSequenceClassifier(nn.Module):
    """Encoder + (optional) N-way multiplexing + per-instance classification head."""

    def __init__(self, encoder: Encoder, *, num_labels: int, mux: MuxConfig | None = None):
        super().__init__()
        mux = mux or MuxConfig()
        cfg = encoder.config
        h = cfg.hidden_size
        self.encoder = encoder
        self.mux_config = mux
        self.num_labels = num_labels
        self.n = mux.n
        if mux.layers >= cfg.num_layers:
            raise ConfigError(
                f"mux_layers ({mux.layers}) must be below the encoder's {cfg.num_layers} layers: "
                f"at least one layer must run on the combined instances; use 0..{cfg.num_layers - 1}"
            )
        # sparsity's denominator: the unpruned encoder's layer parameters (kept through pruning)
        self.original_prunable_params = encoder.prunable_parameters()
        if self.n > 1:
            self.index_embeddings = nn.Embedding(self.n + 1, h)  # row N: shared "no index"
            self.multiplexer = make_multiplexer(mux, h)
            self.demux = IndexDemultiplexer(
                h, cfg.layer_norm_eps, skip=mux.combiner == "concat_skip"
            )
            self.retrieval_head = RetrievalHead(h, cfg.vocab_size, cfg.layer_norm_eps)
            init_weights(self.index_embeddings)
            init_weights(self.demux)
            init_weights(self.retrieval_head)
            # index rows in the word-embedding scale so the prefix is not drowned out
            with torch.no_grad():
                # (k > 0: the prefix joins states that left a LayerNorm, so unit scale)
                std = float(encoder.embeddings.word.weight.std()) if mux.layers == 0 else 1.0
                self.index_embeddings.weight.normal_(0.0, std)
                # demuxed states start in the scale of the encoder's own output states
                last = _last_layer_norm(encoder)
                if last is not None:
                    self.demux.norm.weight.copy_(last.weight)
                    self.demux.norm.bias.copy_(last.bias)
                if self.demux.skip is not None:  # training starts from the plain concat model
                    self.demux.skip.weight.zero_()
            self.register_buffer("_prefix_index", self._prefix_table(self.n), persistent=False)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.classifier = nn.Linear(h, num_labels)
        init_weights(self.classifier)

    @staticmethod
    def _prefix_table(n: int) -> torch.Tensor:
        # (N, N): row i is instance i's prefix: index i at position i, "no index" (N) elsewhere
        t = torch.full((n, n), n, dtype=torch.long)
        t[torch.arange(n), torch.arange(n)] = torch.arange(n)
        return t

    # ---- forward ---------------------------------------------------------------------------
    def _pad_rows(self, *tensors: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """Append dummy rows (fully masked) so B is a multiple of N; returns tensors and real B."""
        b = tensors[0].shape[0]
        extra = (-b) % self.n
        if not extra:
            return list(tensors), b
        out = [
            torch.cat([t, torch.zeros((extra, *t.shape[1:]), dtype=t.dtype, device=t.device)])
            for t in tensors
        ]
        return out, b

    def layout(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> MuxLayout:
        """The parameter-free part of a forward pass: rows padded to a multiple of N, each
        instance's prefix + token mask and the encoder rows' additive attention mask."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        dtype = self.encoder.embeddings.word.weight.dtype
        b = input_ids.shape[0]
        if self.n == 1:
            return MuxLayout(
                input_ids, token_type_ids, attention_mask, attention_bias(attention_mask, dtype), b
            )
        n = self.n
        (ids, mask, tt), _ = self._pad_rows(input_ids, attention_mask, token_type_ids)
        rows, length = ids.shape
        real = (mask.sum(dim=1, keepdim=True) > 0).to(mask.dtype)  # dummy rows: 0
        token_mask = torch.cat([real.expand(rows, n), mask], dim=1)  # (B', N + L)
        # a position of a mixed row is real if any of its instances has it
        group_mask = token_mask.view(rows // n, n, n + length).amax(dim=1)  # (G, N + L)
        instance_bias = attention_bias(mask, dtype) if self.mux_config.layers else None
        return MuxLayout(ids, tt, token_mask, attention_bias(group_mask, dtype), b, instance_bias)

    @property
    def instance_layers(self) -> int:
        """k: the encoder layers that run per instance before the combiner (0 for N = 1)."""
        return self.mux_config.layers

    def _prefix(self, rows: int) -> torch.Tensor:  # (B', N, H) each instance's index prefix
        return self.index_embeddings(self.get_buffer("_prefix_index").repeat(rows // self.n, 1))

    def _combine(self, lay: MuxLayout, x: torch.Tensor) -> torch.Tensor:
        """(B', N + L, H) prefixed instances -> (G, N + L, H) combined rows."""
        rows, t, h = x.shape
        x = x * lay.token_mask.unsqueeze(-1).to(x.dtype)  # padding contributes nothing to the mix
        return self.multiplexer(x.view(rows // self.n, self.n, t, h))

    def embed(self, lay: MuxLayout) -> torch.Tensor:
        """Input of the first encoder layer: (B, L, H) per instance for N = 1 or k > 0, else
        (G, N + L, H) mixed rows."""
        if self.n == 1 or self.instance_layers:
            return self.encoder.embeddings(lay.ids, lay.token_types)
        return self._combine(lay, self._prefixed_embeddings(lay))

    def _prefixed_embeddings(self, lay: MuxLayout) -> torch.Tensor:  # (B', N + L, H), k = 0
        prefix = self._prefix(lay.ids.shape[0])
        return self.encoder.embeddings(lay.ids, lay.token_types, prefix=prefix)

    def late_mix(self, lay: MuxLayout, x: torch.Tensor) -> torch.Tensor:
        """k > 0: (B', L, H) per-instance states after the first k layers -> (G, N + L, H)."""
        return self._combine(lay, torch.cat([self._prefix(x.shape[0]).to(x.dtype), x], dim=1))

    def run_encoder(
        self, lay: MuxLayout, layers: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last encoder layer's output rows, and (k > 0) the per-instance states (B', L, H)
        the combiner received; with a list `layers` (N = 1), each layer's output too."""
        k = self.instance_layers if self.n > 1 else 0
        instances = None
        if self.n > 1 and not k and self.demux.skip is not None:  # k = 0: the embedded tokens
            x = self._prefixed_embeddings(lay)
            instances, h = x[:, self.n :], self._combine(lay, x)
        else:
            h = self.embed(lay)
        for i, layer in enumerate(self.encoder.layers):
            if k and i == k:
                instances = h
                h = self.late_mix(lay, h)
            h = layer(h, lay.instance_bias if i < k else lay.bias)
            if layers is not None:
                layers.append(h)
        return h, instances

    def states_from_instance_layers(
        self, lay: MuxLayout, x: torch.Tensor, positions: str = "all"
    ) -> torch.Tensor:
        """Late multiplexing from given per-instance states (B', L, H) after the first k layers
        (e.g. computed once while those layers are frozen): the combiner, the shared layers and
        the readout, as `hidden_states` computes them."""
        k = self.instance_layers
        if self.n == 1 or not k:
            raise ValueError("per-instance states exist only for late multiplexing (k > 0)")
        h = self.late_mix(lay, x)
        for layer in list(self.encoder.layers)[k:]:
            h = layer(h, lay.bias)
        return self.readout(lay, h, positions, x)

    def readout(
        self,
        lay: MuxLayout,
        h: torch.Tensor,
        positions: str = "cls",
        instances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-instance states from the last layer's output: (B, H) for positions="cls",
        (B, L, H) for positions="all" (demultiplexed for N > 1; "concat_skip" also reads
        `instances`, the per-instance states (B', L, H) after the first k layers)."""
        if self.n == 1:
            return h[:, 0] if positions == "cls" else h
        n = self.n
        rows, length = lay.ids.shape
        keys = h[:, :n].unsqueeze(2)  # (G, N, 1, H)
        if positions == "cls":
            own = None if instances is None else instances[:, :1].reshape(rows // n, n, 1, -1)
            out = self.demux(h[:, n : n + 1].unsqueeze(1), keys, own)  # (G, N, 1, H)
            return out.reshape(rows, -1)[: lay.batch_size]
        own = None if instances is None else instances.reshape(rows // n, n, length, -1)
        out = self.demux(h[:, n:].unsqueeze(1), keys, own)  # (G, N, L, H)
        return out.reshape(rows, length, -1)[: lay.batch_size]

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        positions: str = "cls",
        layers: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-instance final states: (B, H) for positions="cls", (B, L, H) for positions="all".
        With a list `layers` (N=1 only: inside a multiplexed model the states are mixed), each
        encoder layer's output (B, L, H) is appended to it."""
        if layers is not None and self.n > 1:
            raise ValueError("per-layer states are per instance only for N=1 models")
        lay = self.layout(input_ids, attention_mask, token_type_ids)
        h, instances = self.run_encoder(lay, layers)
        return self.readout(lay, h, positions, instances)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_labels)."""
        if self.mux_config.pooling == "cls":
            cls = self.hidden_states(input_ids, attention_mask, token_type_ids, positions="cls")
            return self.head(cls)
        states = self.hidden_states(input_ids, attention_mask, token_type_ids, positions="all")
        return self.logits_from_states(states, attention_mask)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Task logits from pooled per-instance states (B, H)."""
        return self.classifier(self.dropout(self.encoder.pool(pooled)))

    def pool_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) per-instance states -> (B, H) by the configured pooling."""
        return pool_states(states, attention_mask, self.mux_config.pooling)

    def logits_from_states(
        self, states: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Task logits from the per-instance states of `hidden_states(positions="all")`."""
        return self.head(self.pool_states(states, attention_mask))

    def retrieval_logits(self, states: torch.Tensor) -> torch.Tensor:
        if self.n == 1:
            raise ValueError("retrieval is defined for multiplexed models only (N > 1)")
        return self.retrieval_head(states, self.encoder.embeddings.word.weight)

    # ---- persistence -----------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "format": "autoprumux.MuxSequenceClassifier/1",
            "encoder": self.encoder.config.to_dict(),
            "num_labels": self.num_labels,
            "mux": asdict(self.mux_config),
            "original_prunable_params": self.original_prunable_params,
        }

    def save(self, directory: str | Path, *, extra: dict | None = None) -> Path:
        return write_model_dir(self, directory, self.config_dict(), extra)

    @classmethod
    def from_config(cls, cfg: dict) -> MuxSequenceClassifier:
        """The model `config_dict()` describes, with fresh weights."""
        enc = Encoder(EncoderConfig.from_dict(cfg["encoder"]))
        model = cls(enc, num_labels=int(cfg["num_labels"]), mux=MuxConfig(**cfg["mux"]))
        model.original_prunable_params = int(
            cfg.get("original_prunable_params", model.original_prunable_params)
        )
        return model

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> MuxSequenceClassifier:
        cfg, sd = read_model_dir(directory, map_location)
        model = cls.from_config(cfg)
        model.load_state_dict(sd, strict=True)
        return model

    def sparsity(self) -> float:
        """Counted sparsity of the physical model (see the README's definitions)."""
        return counted_sparsity(self.encoder, self.original_prunable_params)


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
