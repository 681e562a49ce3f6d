"""A compact BERT encoder whose layers can have any number of heads and FFN units.

The weights load from any BERT checkpoint (`transformers` `BertModel` layout). Every layer keeps
its own `num_heads` / `ffn_size`; structural pruning (see `_pruning.py`) rebuilds layers with
fewer rows/columns and updates these fields. A layer with 0 heads keeps only the attention
output bias + LayerNorm (exactly what the masked computation gives); a removed sub-layer is
skipped entirely (identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from autoprumux.models._precision import count_parameters


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    head_dim: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout: float
    attention_dropout: float
    hidden_act: str
    # per-layer shape: heads kept, FFN units kept; 0 means the sub-layer's matmuls are gone
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    # per-layer flags: False when the whole sub-layer (incl. its LayerNorm) was removed
    attn_present: tuple[bool, ...] = field(default=())
    ffn_present: tuple[bool, ...] = field(default=())
    pad_token_id: int = 0
    has_pooler: bool = True

    def __post_init__(self) -> None:
        n = len(self.heads)
        if len(self.ffn) != n:
            raise ValueError(
                f"heads ({n} layers) and ffn ({len(self.ffn)} layers) differ in length"
            )
        if not self.attn_present:
            object.__setattr__(self, "attn_present", (True,) * n)
        if not self.ffn_present:
            object.__setattr__(self, "ffn_present", (True,) * n)

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict:
        d = self.__dict__.copy()
        for k in ("heads", "ffn", "attn_present", "ffn_present"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        d = dict(d)
        for k in ("heads", "ffn", "attn_present", "ffn_present"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)

    @classmethod
    def from_bert_config(cls, c) -> EncoderConfig:
        """From a `transformers` BertConfig (or any config with the same fields)."""
        if c.hidden_size % c.num_attention_heads:
            raise ValueError(
                f"hidden_size ({c.hidden_size}) must be a multiple of num_attention_heads "
                f"({c.num_attention_heads})"
            )
        return cls(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            head_dim=c.hidden_size // c.num_attention_heads,
            max_position_embeddings=c.max_position_embeddings,
            type_vocab_size=c.type_vocab_size,
            layer_norm_eps=c.layer_norm_eps,
            hidden_dropout=c.hidden_dropout_prob,
            attention_dropout=c.attention_probs_dropout_prob,
            hidden_act=c.hidden_act if isinstance(c.hidden_act, str) else "gelu",
            heads=(c.num_attention_heads,) * c.num_hidden_layers,
            ffn=(c.intermediate_size,) * c.num_hidden_layers,
            pad_token_id=getattr(c, "pad_token_id", 0) or 0,
        )

    def with_layers(self, **kw) -> EncoderConfig:
        return replace(self, **kw)


def _act(name: str):
    if name in ("gelu", "gelu_new", "gelu_python"):
        return F.gelu if name == "gelu" else (lambda x: F.gelu(x, approximate="tanh"))
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported hidden_act {name!r}; supported: gelu, gelu_new, relu")


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        h = cfg.hidden_size
        self.word = nn.Embedding(cfg.vocab_size, h, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, h)
        self.token_type = nn.Embedding(cfg.type_vocab_size, h)
        self.norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        token_type_ids: torch.Tensor | None = None,
        position_offset: int = 0,
        prefix: torch.Tensor | None = None,  # (B, P, H) embeddings put before the tokens
    ) -> torch.Tensor:
        b, l_ = input_ids.shape
        x = self.word(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = x + self.token_type(token_type_ids)
        if prefix is not None:
            # prefix tokens use token type 0
            prefix = prefix + self.token_type.weight[0]
            x = torch.cat([prefix, x], dim=1)
            position_offset = 0
        t = x.shape[1]
        # checked on the shape, not on `pos`: a tensor's value would stop torch.export (and
        # the ONNX export) on a data-dependent branch, and cost a device sync per forward
        if position_offset + t > self.position.num_embeddings:
            raise ValueError(
                f"sequence length {t} (+offset {position_offset}) exceeds max_position_embeddings "
                f"({self.position.num_embeddings}); lower max_seq_len"
            )
        pos = torch.arange(position_offset, position_offset + t, device=input_ids.device)
        x = x + self.position(pos)[None]
        return self.dropout(self.norm(x))


class EncoderLayer(nn.Module):
    """Post-LN BERT layer with `num_heads` heads of size `head_dim` and `ffn_size` FFN units."""

    def __init__(
        self,
        cfg: EncoderConfig,
        num_heads: int,
        ffn_size: int,
        attn_present: bool = True,
        ffn_present: bool = True,
    ):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.hidden_size, self.head_dim = h, d
        self.num_heads, self.ffn_size = num_heads, ffn_size
        self.attn_present, self.ffn_present = attn_present, ffn_present
        self.attention_dropout = cfg.attention_dropout
        self.act = _act(cfg.hidden_act)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        if attn_present:
            # fused projection; rows ordered (q|k|v, head, head_dim)
            self.qkv = nn.Linear(h, 3 * num_heads * d) if num_heads else None
            self.attn_out = nn.Linear(num_heads * d, h) if num_heads else None
            self.attn_bias = None if num_heads else nn.Parameter(torch.zeros(h))
            self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        if ffn_present:
            self.ffn_in = nn.Linear(h, ffn_size) if ffn_size else None
            self.ffn_out = nn.Linear(ffn_size, h) if ffn_size else None
            self.ffn_bias = None if ffn_size else nn.Parameter(torch.zeros(h))
            self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        # importance gates (set only while scoring structures; shape (num_heads,), (ffn_size,))
        self.head_gate: torch.Tensor | None = None
        self.ffn_gate: torch.Tensor | None = None

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, H); mask (B, 1, 1, T) additive (0 = attend). Returns the sub-layer output."""
        if not self.attn_present:
            return x
        if self.num_heads == 0:
            assert self.attn_bias is not None
            return self.attn_norm(x + self.attn_bias)
        assert self.qkv is not None and self.attn_out is not None
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(
            qkv[0],
            qkv[1],
            qkv[2],
            attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # (B, heads, T, d)
        if self.head_gate is not None:
            ctx = ctx * self.head_gate.view(1, -1, 1, 1)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.attn_norm(x + self.dropout(self.attn_out(ctx)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ffn_present:
            return x
        if self.ffn_size == 0:
            assert self.ffn_bias is not None
            return self.ffn_norm(x + self.ffn_bias)
        assert self.ffn_in is not None and self.ffn_out is not None
        f = self.act(self.ffn_in(x))
        if self.ffn_gate is not None:
            f = f * self.ffn_gate
        return self.ffn_norm(x + self.dropout(self.ffn_out(f)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.feed_forward(self.attention(x, mask))


def attention_bias(
    attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive mask for scaled_dot_product_attention.

    Built once per forward: a bool mask would be converted to this inside every layer."""
    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~attention_mask.bool(), torch.finfo(dtype).min)[:, None, None, :]


def pool_states(states: torch.Tensor, real: torch.Tensor, pooling: str) -> torch.Tensor:
    """(..., B, T, H) token states -> (..., B, H): the first ([CLS]) token's state, or the mean
    over the real tokens, those where the (B, T) 0/1 mask `real` is 1."""
    if pooling == "cls":
        return states[..., 0, :]
    m = real.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (states * m).sum(-2) / m.sum(-2).clamp_min(1.0)


class Encoder(nn.Module):
    """Embeddings + a list of (possibly pruned) layers + optional pooler."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, h, f, a, p)
            for h, f, a, p in zip(
                cfg.heads, cfg.ffn, cfg.attn_present, cfg.ffn_present, strict=True
            )
        )
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.has_pooler else None

    def refresh_config(self) -> None:
        """Re-derive the per-layer shape fields from the layers (after surgery) and check them."""
        heads, ffn, ap, fp = [], [], [], []
        for layer in self.layers:
            assert isinstance(layer, EncoderLayer)
            if layer.attn_present and layer.num_heads:
                assert layer.qkv is not None
                assert layer.qkv.out_features == 3 * layer.num_heads * layer.head_dim
            if layer.ffn_present and layer.ffn_size:
                assert layer.ffn_in is not None and layer.ffn_in.out_features == layer.ffn_size
            heads.append(layer.num_heads if layer.attn_present else 0)
            ffn.append(layer.ffn_size if layer.ffn_present else 0)
            ap.append(layer.attn_present)
            fp.append(layer.ffn_present)
        self.config = self.config.with_layers(
            heads=tuple(heads), ffn=tuple(ffn), attn_present=tuple(ap), ffn_present=tuple(fp)
        )

    def run_layers(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_bias(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def pool(self, cls: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pooler(cls)) if self.pooler is not None else cls

    def prunable_parameters(self) -> int:
        """Parameters of the encoder layers (embeddings and pooler excluded): sparsity's denominator."""
        return count_parameters(self.layers)

    # ---- weights from a transformers BertModel state dict ------------------------------------
    def load_bert_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Copy weights from a `BertModel` (or `bert.`-prefixed) state dict of an unpruned model."""
        sd = {k.removeprefix("bert."): v for k, v in sd.items()}
        e = self.embeddings
        pairs = [
            (e.word.weight, "embeddings.word_embeddings.weight"),
            (e.position.weight, "embeddings.position_embeddings.weight"),
            (e.token_type.weight, "embeddings.token_type_embeddings.weight"),
            (e.norm.weight, "embeddings.LayerNorm.weight"),
            (e.norm.bias, "embeddings.LayerNorm.bias"),
        ]
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, EncoderLayer)
            p = f"encoder.layer.{i}."
            assert layer.qkv is not None and layer.attn_out is not None
            assert layer.ffn_in is not None and layer.ffn_out is not None
            qkv_w = torch.cat(
                [sd[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]
            )
            qkv_b = torch.cat(
                [sd[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]
            )
            with torch.no_grad():
                layer.qkv.weight.copy_(qkv_w)
                layer.qkv.bias.copy_(qkv_b)
            pairs += [
                (layer.attn_out.weight, p + "attention.output.dense.weight"),
                (layer.attn_out.bias, p + "attention.output.dense.bias"),
                (layer.attn_norm.weight, p + "attention.output.LayerNorm.weight"),
                (layer.attn_norm.bias, p + "attention.output.LayerNorm.bias"),
                (layer.ffn_in.weight, p + "intermediate.dense.weight"),
                (layer.ffn_in.bias, p + "intermediate.dense.bias"),
                (layer.ffn_out.weight, p + "output.dense.weight"),
                (layer.ffn_out.bias, p + "output.dense.bias"),
                (layer.ffn_norm.weight, p + "output.LayerNorm.weight"),
                (layer.ffn_norm.bias, p + "output.LayerNorm.bias"),
            ]
        if self.pooler is not None:
            if "pooler.dense.weight" in sd:
                pairs += [
                    (self.pooler.weight, "pooler.dense.weight"),
                    (self.pooler.bias, "pooler.dense.bias"),
                ]
            else:
                nn.init.normal_(self.pooler.weight, std=0.02)
                nn.init.zeros_(self.pooler.bias)
        missing = [k for _, k in pairs if k not in sd]
        if missing:
            raise KeyError(
                f"checkpoint is not BERT-compatible: missing {missing[:5]} (and {max(0, len(missing) - 5)} more)"
            )
        with torch.no_grad():
            for param, key in pairs:
                if tuple(param.shape) != tuple(sd[key].shape):
                    raise ValueError(
                        f"shape mismatch for {key}: model {tuple(param.shape)} vs checkpoint {tuple(sd[key].shape)}"
                    )
                param.copy_(sd[key])


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation for freshly created parameters."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def head_param_count(cfg: EncoderConfig) -> int:
    """Parameters one attention head owns: q, k, v rows (+bias) and its attn_out columns."""
    return 3 * (cfg.hidden_size * cfg.head_dim + cfg.head_dim) + cfg.hidden_size * cfg.head_dim


def ffn_unit_param_count(cfg: EncoderConfig) -> int:
    return 2 * cfg.hidden_size + 1
