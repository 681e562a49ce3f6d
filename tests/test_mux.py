"""Encoder equivalence and data-multiplexing invariants on tiny random BERTs."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch, tiny_bert_config, tiny_encoder

from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier, OrthogonalMux


def make(
    n: int,
    variant: str = "gaussian",
    seed: int = 0,
    pooling: str = "cls",
    layers: int = 0,
    combiner: str = "binding",
) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(seed)
    torch.manual_seed(seed + 1)
    mux = MuxConfig(n=n, variant=variant, pooling=pooling, layers=layers, combiner=combiner)
    return MuxSequenceClassifier(enc, num_labels=3, mux=mux).eval()


# (mux_layers, combiner) of the multiplexed models the invariants below must hold for: early and
# late (k = 1 of the tiny model's 2 layers) mixing, fixed binding and the learned concatenation
SHAPES = [(0, "binding"), (1, "binding"), (0, "concat"), (1, "concat")]


def test_encoder_matches_transformers_bert():
    enc, hf = tiny_encoder()
    ids, mask, tt = random_batch(4, 12)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        ours = enc.run_layers(enc.embeddings(ids, tt), mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)


def test_n1_equals_plain_sequence_classifier():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = tiny_bert_config(num_labels=3)
    hf = BertForSequenceClassification(cfg).eval()
    from autoprumux.models import Encoder, EncoderConfig

    enc = Encoder(EncoderConfig.from_bert_config(cfg))
    enc.load_bert_state_dict(hf.state_dict())
    model = MuxSequenceClassifier(enc, num_labels=3, mux=MuxConfig(n=1)).eval()
    with torch.no_grad():
        model.classifier.weight.copy_(hf.classifier.weight)
        model.classifier.bias.copy_(hf.classifier.bias)
    ids, mask, tt = random_batch(5, 10)
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask, tt),
            hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    assert not hasattr(model, "multiplexer")  # N=1 is the plain path, no mux parameters


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("variant", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_length_does_not_change_outputs(n, variant, pooling):
    model = make(n, variant, pooling=pooling)
    _check_padding_length(model, n)


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize(("layers", "combiner"), SHAPES[1:])
def test_padding_length_does_not_change_late_or_concat_outputs(n, layers, combiner):
    _check_padding_length(make(n, pooling="mean", layers=layers, combiner=combiner), n)


def _check_padding_length(model: MuxSequenceClassifier, n: int) -> None:
    ids, mask, tt = random_batch(2 * n, 9)
    pad = 7
    ids2 = torch.cat([ids, torch.zeros(ids.shape[0], pad, dtype=torch.long)], 1)
    mask2 = torch.cat([mask, torch.zeros_like(ids2[:, :pad])], 1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask, tt), model(ids2, mask2, torch.zeros_like(ids2)), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize(("layers", "combiner"), SHAPES)
def test_padding_tokens_contribute_nothing(n, pooling, layers, combiner):
    """Garbage ids under an instance's padding must not leak into the mix (the reference code's bug)."""
    model = make(n, pooling=pooling, layers=layers, combiner=combiner)
    ids, mask, tt = random_batch(2 * n, 10, seed=3)
    assert (mask == 0).any()
    noisy = torch.where(mask.bool(), ids, torch.randint(5, 99, ids.shape))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask, tt), model(noisy, mask, tt), atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize("variant", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_permuting_inputs_with_their_indices_permutes_outputs(variant, pooling):
    """Swapping instances together with their index embedding, prefix position and mixing transform
    swaps the outputs exactly: the demultiplexer reads instance i from index i and nowhere else."""
    n = 3
    model = make(n, variant, pooling=pooling)
    ids, mask, tt = random_batch(n, 8, seed=5)
    perm = torch.tensor([2, 0, 1])
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        w = model.index_embeddings.weight
        permuted.index_embeddings.weight[:n] = w[:n][perm]
        pos = model.encoder.embeddings.position.weight
        permuted.encoder.embeddings.position.weight[:n] = pos[:n][perm]
        buf = "matrices" if variant == "orthogonal" else "vectors"
        getattr(permuted.multiplexer, buf).copy_(getattr(model.multiplexer, buf)[perm])
        out = model(ids, mask, tt)
        out_p = permuted(ids[perm], mask[perm], tt[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-4)
    # and the outputs do depend on the slot (a mux that ignored the index would pass trivially)
    with torch.no_grad():
        assert not torch.allclose(model(ids[perm], mask[perm], tt[perm]), out[perm], atol=1e-4)


@pytest.mark.parametrize(("layers", "combiner"), SHAPES)
def test_groups_are_independent_and_outputs_depend_on_partners(layers, combiner):
    n = 2
    model = make(n, layers=layers, combiner=combiner)
    ids, mask, tt = random_batch(4, 8, seed=7)
    with torch.no_grad():
        out = model(ids, mask, tt)
        ids2 = ids.clone()
        ids2[3, 1:3] = torch.tensor([11, 12])  # change an instance of group 1 only
        out2 = model(ids2, mask, tt)
    torch.testing.assert_close(out[:2], out2[:2])  # group 0 untouched
    assert not torch.allclose(out[2], out2[2])  # its mixing partner (row 2) is affected


@pytest.mark.parametrize("b", [1, 3, 5])
@pytest.mark.parametrize(("layers", "combiner"), SHAPES)
def test_batch_not_divisible_by_n_is_padded_with_dummy_rows(b, layers, combiner):
    n = 4
    model = make(n, layers=layers, combiner=combiner)
    ids, mask, tt = random_batch(8, 8, seed=9)
    with torch.no_grad():
        out = model(ids[:b], mask[:b], tt[:b])
        # explicit dummy rows (fully masked) give the same outputs for the real rows
        pad = 8 - b
        ref = model(
            torch.cat([ids[:b], torch.zeros(pad, 8, dtype=torch.long)]),
            torch.cat([mask[:b], torch.zeros(pad, 8, dtype=torch.long)]),
            torch.cat([tt[:b], torch.zeros(pad, 8, dtype=torch.long)]),
        )
    assert out.shape == (b, 3)
    torch.testing.assert_close(out, ref[:b])


def test_mux_config_validation():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="positive integer"):
            MuxConfig(n=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hadamard"):
        MuxConfig(n=2, variant="hadamard")


def test_orthogonal_mux_matrices_are_orthogonal_and_fixed():
    m = OrthogonalMux(3, 16, seed=4)
    q = m.matrices
    eye = torch.eye(16).expand(3, 16, 16)
    torch.testing.assert_close(q @ q.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(OrthogonalMux(3, 16, seed=4).matrices, q)
    assert not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize(
    ("n", "layers", "combiner"), [(1, 0, "binding"), *((2, *s) for s in SHAPES)]
)
def test_save_load_round_trip(tmp_path, n, layers, combiner):
    model = make(n, layers=layers, combiner=combiner)
    ids, mask, tt = random_batch(4, 8)
    model.save(tmp_path / "m")
    loaded = MuxSequenceClassifier.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, tt), model(ids, mask, tt))
    assert loaded.mux_config == model.mux_config


def test_retrieval_states_shape_and_logits():
    model = make(2)
    ids, mask, tt = random_batch(3, 6)  # 3 rows -> one dummy row inside
    with torch.no_grad():
        states = model.hidden_states(ids, mask, tt, positions="all")
        logits = model.retrieval_logits(states)
    assert states.shape == (3, 6, 32)
    assert logits.shape == (3, 6, 99)
    with pytest.raises(ValueError, match="N > 1"):
        make(1).retrieval_logits(states)


def test_demux_split_product_equals_the_concatenated_linear():
    """The demultiplexer computes W [h_t ; k_i] as W_t h_t + W_k k_i (shared across instances)."""
    model = make(3)
    tokens, keys = torch.randn(2, 1, 5, 32), torch.randn(2, 3, 1, 32)
    d = model.demux
    cat = torch.cat([tokens.expand(2, 3, 5, 32), keys.expand(2, 3, 5, 32)], dim=-1)
    ref = d.norm(torch.nn.functional.gelu(d.proj(cat)))
    with torch.no_grad():
        torch.testing.assert_close(d(tokens, keys), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2])
def test_mean_pooling_reads_the_mean_of_the_instance_token_states(n):
    model = make(n, pooling="mean")
    ids, mask, tt = random_batch(2 * n, 9, seed=4)
    with torch.no_grad():
        states = model.hidden_states(ids, mask, tt, positions="all")
        m = mask.unsqueeze(-1).float()
        pooled = (states * m).sum(1) / m.sum(1)
        torch.testing.assert_close(model(ids, mask, tt), model.head(pooled))
        cls_model = copy.deepcopy(model)
        cls_model.mux_config = MuxConfig(n=n, pooling="cls")
        assert not torch.allclose(cls_model(ids, mask, tt), model(ids, mask, tt), atol=1e-4)
    with pytest.raises(ConfigError, match="pooling"):
        MuxConfig(n=2, pooling="max")
