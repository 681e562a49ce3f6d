"""Evaluate one PruMUX configuration end to end, beside its baseline.

    baseline  = base model fine-tuned on the task (N=1, sparsity 0)          [cached]
    mux model = base model + retrieval warm-up(N) + task fine-tune (N)        [cached per N]
    candidate = (baseline | mux model) pruned to the sparsity + recovery fine-tune with
                distillation from the baseline                               [cached]
The baseline, the task fine-tune, each recovery and the students train until the validation
split (held out of train) plateaus, the recipe's step counts their caps (`stage_training`).
    trained   = the candidate, distilled further as int8 computes (int8 only) [cached]
Accuracy is measured on the dev split; throughput of baseline and candidate side by side in the
same process on the same device, so speedup is a ratio from one run. Academus students
(`_students`) are built from the same baseline and measured the same way.
"""

from autoprumux.pipeline._baseline import validation_loss
from autoprumux.pipeline._mux import WARMUP_LOG, last_stage
from autoprumux.pipeline._pipeline import DEV_PAIRINGS, PruMuxPipeline

__all__ = ["DEV_PAIRINGS", "WARMUP_LOG", "PruMuxPipeline", "last_stage", "validation_loss"]
