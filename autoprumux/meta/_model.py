"""The meta-model: LightGBM regressors predicting (accuracy loss, speedup) of a configuration.

Each target is a non-negative least-squares prior on the shape of the ideal speedup
(-log(1 - sparsity), log2 of the effective N) plus LightGBM trees on what the prior leaves.
Features describe the configuration (technique; sparsity, N, mux variant, per-instance layers
and combiner for PruMUX; K and depth for Academus students) and its context (task, base model,
device, baseline accuracy), so one model serves several studies. Monotone constraints encode what
holds by construction: removing more parameters or multiplexing more inputs never lowers the
accuracy loss or the speedup; more per-instance layers before the combiner (late multiplexing)
and more or deeper students never raise the loss or the speedup. LightGBM refuses monotone constraints with its quantile objective,
so the uncertainty is a jackknife interval instead: the point models are refitted leaving each
trial out (up to `MAX_FOLDS` trials; K-fold, "CV+", beyond), and the interval is the point
prediction +- the `coverage` quantile of those out-of-fold errors (wider with few or noisy
trials, narrower as the study grows). A suggestion to measure next demands that the pessimistic
loss (the interval's top) stays inside the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from autoprumux.config import BASELINE, PRECISION_RANK, SPLIT_COMBINERS, Candidate, runtime_of

FEATURES = (
    "technique_students",
    "sparsity",
    "log2_mux",
    "variant_orthogonal",
    "students",
    "student_depth",
    "precision_rank",
    "runtime_openvino",
    "mux_layers",
    "combiner_concat",
    "combiner_skip",
    "task_num_labels",
    "task_pair",
    "task_mcc",
    "task_log_train",
    "baseline_metric",
    "model_layers",
    "model_hidden",
    "model_log_params",
    "device_cuda",
)
# what `features` reads from the study context
CONTEXT_KEYS = FEATURES[FEATURES.index("task_num_labels") :]
# +1: the target does not decrease as the feature rises; -1: it does not increase
MONOTONE_LOSS = {
    "sparsity": 1,
    "log2_mux": 1,
    "students": -1,
    "student_depth": -1,
    "precision_rank": 1,
    # layers run per instance before the combiner: a late model mixes less (see `MuxShape`)
    "mux_layers": -1,
}
MONOTONE_SPEEDUP = MONOTONE_LOSS
TARGETS = ("accuracy_loss", "speedup")
# the prior's terms: -log(1 - sparsity), log2 of the effective N, precision rank, the OpenVINO
# runtime (see `_prior_features`)
PRIOR_TERMS = 4
# the interval's out-of-fold errors: leave-one-out up to this many rows, K-fold beyond
MAX_FOLDS = 10


def features(c: Candidate, context: dict[str, Any]) -> list[float]:
    """One feature row from a configuration and its study context (see `context_of`)."""
    students = c.technique == "students"
    return [
        1.0 if students else 0.0,
        c.sparsity,
        math.log2(c.mux),
        1.0 if c.mux_variant == "orthogonal" else 0.0,
        float(c.students),
        float(c.student_depth),
        float(PRECISION_RANK[c.precision]),
        1.0 if runtime_of(c.precision) == "openvino" else 0.0,
        float(c.mux_layers),
        1.0 if c.mux_combiner in SPLIT_COMBINERS else 0.0,
        1.0 if c.mux_combiner == "concat_skip" else 0.0,
        float(context["task_num_labels"]),
        float(context["task_pair"]),
        float(context["task_mcc"]),
        float(context["task_log_train"]),
        float(context["baseline_metric"]),
        float(context["model_layers"]),
        float(context["model_hidden"]),
        float(context["model_log_params"]),
        float(context["device_cuda"]),
    ]


class MetaModel(RegressorMixin, BaseEstimator):
    """(accuracy loss, speedup) regressor pair with jackknife intervals (scikit-learn contract).

    `fit(X, y)`: X (n, len(FEATURES)), y (n, 2) = [accuracy loss in points, speedup].
    `predict(X)` -> (n, 2); `predict_interval(X)` -> (low, high), each (n, 2).
    Speedup is modelled in log space (positive, multiplicative).
    """

    def __init__(
        self,
        *,
        coverage: float = 0.8,
        n_estimators: int = 150,
        learning_rate: float = 0.1,
        num_leaves: int = 7,
        min_child_samples: int = 1,
        monotone: bool = True,
        prior: bool = True,
        random_state: int = 0,
    ):
        self.coverage = coverage
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.monotone = monotone
        self.prior = prior
        self.random_state = random_state

    def _make(self, monotone: dict[str, int]) -> Any:
        import lightgbm as lgb

        cons = [monotone.get(f, 0) if self.monotone else 0 for f in FEATURES]
        return lgb.LGBMRegressor(
            objective="regression",
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            min_child_weight=0.0,
            min_data_in_bin=1,
            min_split_gain=0.0,
            monotone_constraints=cons,
            monotone_constraints_method="advanced",
            random_state=self.random_state,
            # tens of rows: LightGBM's default thread pool costs seconds per fit on a busy
            # machine against milliseconds on one thread
            n_jobs=1,
            verbose=-1,
        )

    def fit(self, X: Any, y: Any) -> MetaModel:
        X = _as_matrix(X)
        y = np.asarray(y, dtype=float)
        if y.ndim != 2 or y.shape[1] != 2 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be (n, 2) = [accuracy loss, speedup], got {y.shape}")
        if X.shape[0] < 2:
            raise ValueError(
                f"need at least 2 finished trials to fit the meta-model, got {X.shape[0]}"
            )
        if (y[:, 1] <= 0).any():
            raise ValueError("speedups must be positive")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage ({self.coverage}) must be in (0, 1)")
        targets = (y[:, 0], np.log(y[:, 1]))
        n = X.shape[0]
        self.models_: list[Any] = []
        self.prior_coef_: list[np.ndarray] = []
        self.half_width_: list[float] = []
        for t, mono in zip(targets, (MONOTONE_LOSS, MONOTONE_SPEEDUP), strict=True):
            coef, model = self._fit_one(X, t, mono)
            self.prior_coef_.append(coef)
            self.models_.append(model)
            # out-of-fold errors: leave one out up to MAX_FOLDS trials, K-fold beyond (CV+), so
            # the fit costs at most 2 x (MAX_FOLDS + 1) small models whatever the study's size
            folds = np.arange(n) % min(n, MAX_FOLDS)
            errs = np.zeros(n)
            for f in range(min(n, MAX_FOLDS)):
                out = folds == f
                if n - out.sum() >= 2:
                    c, m = self._fit_one(X[~out], t[~out], mono)
                    guess = self._predict_one(c, m, X[out])
                else:  # one trial left: LightGBM needs two, the left-out guess is its value
                    guess = np.full(out.sum(), t[~out].mean())
                errs[out] = np.abs(guess - t[out])
            # finite-sample (jackknife+) level: the ceil(coverage * (n + 1))-th smallest error
            k = min(n, math.ceil(self.coverage * (n + 1)))
            self.half_width_.append(float(np.sort(errs)[k - 1]))
        self.n_features_in_ = X.shape[1]
        self.n_train_ = n
        return self

    def _fit_one(self, X: np.ndarray, t: np.ndarray, mono: dict[str, int]) -> tuple[Any, Any]:
        """A non-negative least-squares prior on the PruMUX shape features (see `_prior`), then
        the monotone trees on what it leaves."""
        from scipy.optimize import nnls

        P = _prior_features(X)
        coef = nnls(P, t)[0] if self.prior and P.any() else np.zeros(P.shape[1])
        return coef, self._make(mono).fit(X, t - P @ coef)

    @staticmethod
    def _predict_one(coef: np.ndarray, model: Any, X: np.ndarray) -> np.ndarray:
        return np.asarray(_prior_features(X) @ coef + model.predict(X))

    def _point(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "models_")
        X = _as_matrix(X)
        return np.stack(
            [
                self._predict_one(c, m, X)
                for c, m in zip(self.prior_coef_, self.models_, strict=True)
            ],
            axis=1,
        )  # (n, 2): loss, log speedup

    def predict(self, X: Any) -> np.ndarray:
        p = self._point(X)
        return _known(X, np.stack([p[:, 0], np.exp(p[:, 1])], axis=1))

    def predict_interval(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        p = self._point(X)
        w_loss, w_speed = self.half_width_
        low = np.stack([p[:, 0] - w_loss, np.exp(p[:, 1] - w_speed)], axis=1)
        high = np.stack([p[:, 0] + w_loss, np.exp(p[:, 1] + w_speed)], axis=1)
        return _known(X, low), _known(X, high)

    # ---- serialization as data (no pickle): JSON-able state + LightGBM text models -----------
    def to_dict(self) -> dict[str, Any]:
        """The fitted state as JSON-able data: the hyper-parameters, the priors' coefficients,
        the jackknife half-widths and each target's trees as LightGBM's text model format.
        `from_dict` rebuilds a model that predicts identically; nothing in it is code."""
        check_is_fitted(self, "models_")
        return {
            "format": META_MODEL_FORMAT,
            "features": list(FEATURES),
            "targets": ["accuracy_loss", "log_speedup"],
            "params": self.get_params(),
            "prior_coef": [[float(c) for c in coef] for coef in self.prior_coef_],
            "half_width": [float(w) for w in self.half_width_],
            "n_features_in": int(self.n_features_in_),
            "n_train": int(self.n_train_),
            "trees": [_booster_of(m).model_to_string() for m in self.models_],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetaModel:
        """The model `to_dict` described. Refuses (ValueError) anything of another format or
        shape rather than predicting from it."""
        import lightgbm as lgb

        if not isinstance(d, dict) or d.get("format") != META_MODEL_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a {META_MODEL_FORMAT} meta-model (format {got!r})")
        if d.get("features") != list(FEATURES):
            raise ValueError(
                "the meta-model was fitted on other features than this version of autoprumux "
                "computes; fit it again (rerun the search or register_recommender)"
            )
        params = d.get("params")
        allowed = set(cls().get_params())
        if not isinstance(params, dict) or not set(params) <= allowed:
            raise ValueError(f"meta-model params must be a dict with keys in {sorted(allowed)}")
        coefs, widths, trees = d.get("prior_coef"), d.get("half_width"), d.get("trees")
        if not (
            isinstance(coefs, list)
            and isinstance(widths, list)
            and isinstance(trees, list)
            and len(coefs) == len(widths) == len(trees) == len(TARGETS)
            and all(isinstance(c, list) and len(c) == PRIOR_TERMS for c in coefs)
            and all(isinstance(t, str) for t in trees)
        ):
            raise ValueError(
                f"meta-model state must hold two prior_coef lists of {PRIOR_TERMS}, two "
                "half_width values and two LightGBM text models"
            )
        m = cls(**params)
        m.prior_coef_ = [_finite_array(c, "prior_coef") for c in coefs]
        m.half_width_ = [float(_finite_array([w], "half_width")[0]) for w in widths]
        m.models_ = [_TextTrees(lgb.Booster(model_str=t)) for t in trees]
        for t in m.models_:
            if t.booster.num_feature() != len(FEATURES):
                raise ValueError(
                    f"a LightGBM model reads {t.booster.num_feature()} features, not "
                    f"{len(FEATURES)}"
                )
        m.n_features_in_ = int(d.get("n_features_in", len(FEATURES)))
        m.n_train_ = int(d.get("n_train", 0))
        return m


META_MODEL_FORMAT = "autoprumux.meta_model/1"


class _TextTrees:
    """A LightGBM booster rebuilt from its text model, predicting like the fitted
    `LGBMRegressor` it came from (on one thread, as the fits run; see `MetaModel._make`)."""

    def __init__(self, booster: Any):
        self.booster = booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, num_threads=1))


def _booster_of(m: Any) -> Any:
    return m.booster if isinstance(m, _TextTrees) else m.booster_


def _finite_array(v: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"meta-model {name} must be numbers, got {str(v)[:80]}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"meta-model {name} must be finite numbers, got {a.tolist()}")
    return a


def _known(X: Any, pred: np.ndarray) -> np.ndarray:
    """The baseline's loss 0 and speedup 1 are definitions, not predictions."""
    X = _as_matrix(X)
    names = ("technique_students", "sparsity", "log2_mux", "precision_rank", "runtime_openvino")
    base = np.all(X[:, [FEATURES.index(f) for f in names]] == 0.0, axis=1)
    pred = pred.copy()
    pred[base] = (0.0, 1.0)
    return pred


def _prior_features(X: np.ndarray) -> np.ndarray:
    """(n, 4): -log(1 - sparsity) and log2 of the effective N for PruMUX rows (0 for students):
    the log of the ideal speedup of removing a fraction of the work and of serving N inputs per
    pass; the precision's rank (a conversion multiplies the speed and adds to the loss of any
    model); and whether OpenVINO runs it (a runtime multiplies the speed too). Both targets get
    a non-negative combination of them as a prior, fitted by least squares, so the model rises
    smoothly in sparsity and N between and beyond the few measured points (a tree alone is flat
    between them and cannot tell N apart from one N > 1 trial)."""
    i_students, i_s, i_n, i_p = (
        FEATURES.index(f) for f in ("technique_students", "sparsity", "log2_mux", "precision_rank")
    )
    prumux = X[:, i_students] == 0.0
    s = np.clip(X[:, i_s], 0.0, 0.99)
    runtime = X[:, FEATURES.index("runtime_openvino")]
    terms = [-np.log1p(-s) * prumux, _log2_effective_mux(X) * prumux, X[:, i_p], runtime]
    return np.stack(terms, axis=1)


def _log2_effective_mux(X: np.ndarray) -> np.ndarray:
    """log2 of the ideal speedup of multiplexing: N when the instances are mixed before the
    encoder; with k of the model's L layers run per instance first, L / (k + (L - k) / N) (the
    layers run per input). Where L is not known (0: a context without descriptors) or k is 0,
    log2 N as it is."""
    i_n, i_k, i_l = (FEATURES.index(f) for f in ("log2_mux", "mux_layers", "model_layers"))
    log2_n, k, layers = X[:, i_n], X[:, i_k], X[:, i_l]
    late = (k > 0) & (layers > k)
    safe_l = np.where(late, layers, 1.0)
    safe_k = np.where(late, k, 0.0)
    effective = safe_l / (safe_k + (safe_l - safe_k) / np.exp2(log2_n))
    return np.where(late, np.log2(effective), log2_n)


def _as_matrix(X: Any) -> np.ndarray:
    if hasattr(X, "to_numpy"):
        cols = getattr(X, "columns", None)
        if cols is not None and set(FEATURES) <= set(cols):
            X = X[list(FEATURES)]
        X = X.to_numpy()
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != len(FEATURES):
        raise ValueError(
            f"X must be (n, {len(FEATURES)}) with columns {list(FEATURES)}, got {X.shape}"
        )
    return X


def training_table(
    rows: Sequence[tuple[Candidate, dict[str, Any], float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """(config, context, accuracy loss, speedup) rows -> X, y, plus one baseline row (loss 0,
    speedup 1: known by definition, never measured as a trial) for each distinct context, so the
    model is anchored where the answer is known."""
    contexts: dict[str, dict[str, Any]] = {}
    for _, ctx, _, _ in rows:
        contexts.setdefault(repr(sorted(ctx.items())), ctx)
    rows = [
        *(r for r in rows if not r[0].is_baseline),
        *((BASELINE, ctx, 0.0, 1.0) for ctx in contexts.values()),
    ]
    X = np.array([features(c, ctx) for c, ctx, _, _ in rows], dtype=float).reshape(
        len(rows), len(FEATURES)
    )
    y = np.array([[loss, sp] for _, _, loss, sp in rows], dtype=float).reshape(len(rows), 2)
    return X, y
