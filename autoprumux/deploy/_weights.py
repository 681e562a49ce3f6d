"""Build an export's model from its config and weights without trusting either: the config
must describe the model the manifest describes, and the parameters it implies must fit in the
weights file (counted from the safetensors header, no tensor loaded), so a config that names a
larger model than its weights (`hidden_size: 200000`) is refused before anything is
allocated. The files were verified against the manifest before (`_files.verify_files`); these
checks hold even for a folder whose manifest was rewritten to match edited files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autoprumux.config import MAX_MUX_LAYERS
from autoprumux.deploy._files import AGAIN, local_file, read_json
from autoprumux.deploy._manifest import ExportManifest
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier, StudentEnsemble
from autoprumux.models._persist import CONFIG_FILE, WEIGHTS_FILE

AnyModel = MuxSequenceClassifier | StudentEnsemble
MODEL_CLASSES: dict[str, type[AnyModel]] = {
    "autoprumux.MuxSequenceClassifier/1": MuxSequenceClassifier,
    "autoprumux.StudentEnsemble/1": StudentEnsemble,
}
# what building a described model may raise for a wrong value or type in its config
BUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError)
# the encoder config's sizes the parameter count rests on (`models.EncoderConfig`)
SIZES = ("vocab_size", "hidden_size", "head_dim", "max_position_embeddings", "type_vocab_size")


def load_model(directory: Path, manifest: ExportManifest) -> AnyModel:
    """The model in `directory` (config `CONFIG_FILE`, weights `WEIGHTS_FILE`), checked
    against `manifest` and the weights' header before it is built (see the module docstring)."""
    from safetensors.torch import load_file

    cfg = read_json(directory, CONFIG_FILE)
    cls = _model_class(cfg, manifest, directory / CONFIG_FILE)
    weights = local_file(directory, WEIGHTS_FILE)
    implied = _implied_parameters(cfg, cls, directory / CONFIG_FILE)
    held = _held_parameters(weights, directory / WEIGHTS_FILE)
    if implied > held:
        raise ConfigError(
            f"{str(directory / CONFIG_FILE)!r} describes a model of at least {implied:,} "
            f"parameters but {str(directory / WEIGHTS_FILE)!r} holds {held:,}: the config and "
            f"the weights are of different models; {AGAIN}"
        )
    _check_seq_len(cfg, manifest, directory)
    try:
        model = cls.from_config(cfg)
        model.load_state_dict(load_file(str(weights)), strict=True)
    except BUILD_ERRORS as e:  # within the bound: built, then refused by a tensor's shape
        raise ConfigError(
            f"{str(directory / WEIGHTS_FILE)!r} does not load into the model "
            f"{str(directory / CONFIG_FILE)!r} describes ({type(e).__name__}: "
            f"{_first_line(e)}); {AGAIN}"
        ) from None
    return model.eval()


def _model_class(cfg: Any, manifest: ExportManifest, path: Path) -> type[AnyModel]:
    """The class the config names, which must be the manifest's technique, and the config's
    values the manifest also states (labels, N and its shape), before anything is built."""
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{str(path)!r} holds a JSON {type(cfg).__name__}, not a model config object; {AGAIN}"
        )
    fmt = cfg.get("format")
    cls = MODEL_CLASSES.get(fmt) if isinstance(fmt, str) else None
    if cls is None:
        raise ConfigError(
            f"{str(path)!r} names the model format {fmt!r}, not one of {list(MODEL_CLASSES)}; "
            + AGAIN
        )
    students = manifest.config.technique == "students"
    if (cls is StudentEnsemble) != students:
        raise ConfigError(
            f"{str(path)!r} holds a {fmt!r} but the manifest describes a "
            f"{manifest.config.technique} model; {AGAIN}"
        )
    labels, named = cfg.get("num_labels"), len(manifest.label_names)
    if isinstance(labels, bool) or not isinstance(labels, int):
        raise ConfigError(f"{str(path)!r}: num_labels {labels!r} is not an integer; {AGAIN}")
    if labels != named:
        raise ConfigError(
            f"the manifest names {named} labels ({list(manifest.label_names)[:10]}) but the model's "
            f"head in {str(path)!r} has {labels} classes: label_names must name each class; "
            + AGAIN
        )
    enc = cfg.get("encoder")
    layers = enc.get("heads") if isinstance(enc, dict) else None
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_MUX_LAYERS:
        raise ConfigError(
            f"{str(path)!r}: encoder.heads must list 1..{MAX_MUX_LAYERS} layers; {AGAIN}"
        )
    if cls is MuxSequenceClassifier:
        mux, shape = cfg.get("mux"), manifest.config.mux_shape
        if not isinstance(mux, dict):
            raise ConfigError(f"{str(path)!r}: mux is {_first_line(mux)}, not an object; {AGAIN}")
        n, k, comb = (
            mux.get(x, d) for x, d in (("n", None), ("layers", 0), ("combiner", "binding"))
        )
        # the predictor groups inputs by the manifest's N: a mismatch would answer wrongly
        if (n, k, comb) != (shape.n, shape.layers, shape.combiner):
            raise ConfigError(
                f"{str(path)!r}: the manifest describes N={shape.n}, mux_layers {shape.layers}, "
                f"combiner {shape.combiner!r} but the weights are N={n!r}, mux_layers {k!r}, "
                f"combiner {comb!r}; {AGAIN}"
            )
    return cls


def _implied_parameters(cfg: dict, cls: type[AnyModel], path: Path) -> int:
    """A lower bound on the parameters of the model `cfg` describes: its embeddings, the
    attention and FFN matrices of every layer it builds, the multiplexer's matrices and its
    classifiers (biases and norms left out). Every size must be a non-negative integer."""
    enc = cfg["encoder"]  # a dict with a list of heads: `_model_class`

    def size(name: str, v: object, low: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(
                f"{str(path)!r}: {name} {_first_line(repr(v))} is not an integer >= {low}; " + AGAIN
            )
        return v

    vocab, h, d, pos, types = (size(f"encoder.{k}", enc.get(k)) for k in SIZES)
    heads = [size("encoder.heads[]", x, 0) for x in enc["heads"]]
    ffn = enc.get("ffn")
    if not isinstance(ffn, list) or len(ffn) != len(heads):
        raise ConfigError(f"{str(path)!r}: encoder.ffn must list one size per layer; {AGAIN}")
    ffn = [size("encoder.ffn[]", x, 0) for x in ffn]
    attn, mlp = (_flags(enc.get(k), len(heads), path) for k in ("attn_present", "ffn_present"))
    per_layer = [
        4 * h * a * d * x + 2 * h * f * y for a, f, x, y in zip(heads, ffn, attn, mlp, strict=True)
    ]
    labels = cfg["num_labels"]
    n = h * (vocab + pos + types)
    if cls is StudentEnsemble:
        st = cfg.get("students")
        k, depth = (st.get("k"), st.get("depth")) if isinstance(st, dict) else (None, None)
        k, depth = size("students.k", k), size("students.depth", depth)
        return n + k * (sum(per_layer[:depth]) + h * labels)
    mux = cfg["mux"]  # an object whose n, layers and combiner are the manifest's
    width = mux["n"]
    if width > 1:  # index embeddings, demultiplexer, retrieval head and the combiner
        orthogonal = mux.get("variant") == "orthogonal" and mux.get("combiner") == "binding"
        n += (width + 1) * h + 3 * h * h + vocab + (width * h * h if orthogonal else 0)
    return n + sum(per_layer) + h * labels


def _flags(v: object, layers: int, path: Path) -> list[bool]:
    """A per-layer presence list (`EncoderConfig.attn_present`, `ffn_present`); empty: all."""
    if v is None or v == []:
        return [True] * layers
    if not isinstance(v, list) or len(v) != layers or not all(isinstance(x, bool) for x in v):
        raise ConfigError(
            f"{str(path)!r}: a layer presence list {_first_line(repr(v))} is not {layers} true/false "
            f"values; {AGAIN}"
        )
    return v


def _held_parameters(weights: Path, shown: Path) -> int:
    """The number of values the weights file holds, read from its safetensors header (which
    the library checks against the file's length): no tensor is loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(
            f"{str(shown)!r} is not a readable safetensors file ({_first_line(e)}); {AGAIN}"
        ) from None


def _check_seq_len(cfg: dict, manifest: ExportManifest, directory: Path) -> None:
    """The manifest's max_seq_len (plus the N-token prefix of a multiplexed model) fits the
    model's position embeddings: longer would fail on every long input, not at load."""
    limit = cfg["encoder"]["max_position_embeddings"]  # an int: `_implied_parameters`
    prefix = manifest.n if manifest.n > 1 else 0
    if manifest.max_seq_len + prefix > limit:
        raise ConfigError(
            f"{str(directory)!r}: the manifest's max_seq_len ({manifest.max_seq_len}) + mux "
            f"prefix ({prefix}) exceeds the model's {limit} positions; {AGAIN}"
        )


def _first_line(e: object) -> str:
    text = (str(e).splitlines() or [""])[0] or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."
