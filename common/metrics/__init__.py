"""Clinical and segmentation metrics at L3: pure functions, accumulators and per-site summaries.

Every function here takes plain arrays or numbers and returns plain numbers, so that the local
evaluation loop, the federated client and the server's report all compute the same thing.

Policies (stated once, used everywhere):

- Dice of two empty masks is undefined: NaN, left out of means and counted separately
  (``DiceAccumulator.n_empty``). A reference that is empty while the prediction is not (or the
  reverse) is a Dice of 0. MONAI's ``compute_dice(ignore_empty=True)`` returns NaN whenever the
  reference is empty; the two agree wherever the reference has at least one pixel.
- Ratios whose denominator is zero (sensitivity without a sarcopenic patient, AUROC with one class)
  are NaN, never 0 or 1.
- SMA is the area of muscle-attenuation tissue inside the muscle outline: evaluation and predict
  pass a network's mask through ``keep_muscle_attenuation`` (Alberta, -29..+150 HU) before measuring it,
  as reference L3 masks are drawn; ``dice_raw`` keeps the score of the mask as the network gave it.

Patients and rows. A per-patient table has one row per evaluated case (a slice; a patient may have
several). ``n`` counts distinct patients by ``patient_id`` (a row without an id, or a table without
the column, counts as one patient). Values are computed over rows, as a patient's slices are
scored one by one; each ``<name>_n`` counts the rows its value is over, which is the weight that
makes pooling exact. The suppression thresholds below count distinct patients.

Suppression (``MIN_COHORT`` = 5; ``site_summary`` applies it, ``pooled_summary`` again to its own
output). A hidden number is NaN, never 0, and its name is in ``suppressed_metrics``; 0 means that
nothing was evaluated, and NaN with a count of 0 that the value is undefined or was not evaluated.

1. A summary of fewer than ``MIN_COHORT`` patients sends no number: ``n``, every aggregate and every
   count are NaN.
2. An aggregate over fewer than ``MIN_COHORT`` patients is hidden together with its ``_n``.
3. A binary-verdict block, the verdict from SMA (``sarcopenia_accuracy, sensitivity, specificity,
   balanced_accuracy``) or the classifier (``cls_accuracy, cls_sensitivity, cls_specificity,
   cls_auroc``), is shown or hidden as a whole, values and counts. It is shown only when each
   reference class, sarcopenic and not sarcopenic, holds at least ``MIN_COHORT`` patients (an empty
   class hides it too: it would say every patient is in the other). So a block's confusion table
   can be recomputed from what is sent (TP = accuracy x n - specificity x n_neg) only when both of
   its classes are that large. When both blocks are shown and their class counts (rows) differ by 1
   to ``MIN_COHORT - 1``, the classifier block is hidden: the difference would count a reference
   class among the rows that one block scored and the other did not.
4. No count from 1 to ``MIN_COHORT - 1`` is sent (``shareable_count``), including
   ``dice_n_both_empty`` and ``n_without_mask`` (``common.train.evaluate``).
5. The pooled summary is computed only from what the sites sent, and a site's hidden value or count
   contributes nothing: pooled summaries of two site sets (two rounds, a site dropping out) differ
   only by numbers the sites sent themselves. Its counts stand in for patients (a site count is 0
   or at least ``MIN_COHORT`` patients' rows).

Not protected:

- The cells of a shown block's confusion table: TP = sensitivity x sensitivity_n may be 1 to 4. The
  threshold is on the reference classes a proportion is over, not on its numerator.
- Differences between counts over nested sets of the same rows, which count rows lacking an input:
  ``n - dice_mean_n`` (both masks empty), ``n - sma_bias_cm2_n`` (an SMA missing),
  ``n - sarcopenia_accuracy_n`` (no verdict: height, sex or, for a BMI-dependent rule, weight
  unknown). They may be 1 to 4 (rule 4 keeps ``dice_n_both_empty`` out of the message, not out of
  reach); they say how many cases lack an input, not their values or classes (a class count over
  such rows is rule 3's cross-block case). ``n`` is in patients and the ``_n`` in rows, so these
  differences are exact only with one row per patient.
- Summaries of two different tables of one site (a holdout changed between runs) can be
  differenced; the rules hold per table, and a site's holdout is fixed within a run.
"""

from common.metrics.agreement import Z_95, BlandAltman, bland_altman
from common.metrics.classification import BinaryCounts, Verdict, auroc, binary_counts, sarcopenia_verdict
from common.metrics.segmentation import (
    DiceAccumulator,
    abs_pct_error,
    dice,
    keep_muscle_attenuation,
    muscle_hu_mean,
    sma_cm2,
)
from common.metrics.summary import (
    BLAND_ALTMAN,
    CLASSIFIER_BLOCK,
    MEANS,
    MIN_COHORT,
    VERDICT_BLOCK,
    count_patients,
    numeric_summary,
    pooled_summary,
    shareable_count,
    site_summary,
)

__all__ = [
    "BLAND_ALTMAN",
    "CLASSIFIER_BLOCK",
    "MEANS",
    "MIN_COHORT",
    "VERDICT_BLOCK",
    "Z_95",
    "BinaryCounts",
    "BlandAltman",
    "DiceAccumulator",
    "Verdict",
    "abs_pct_error",
    "keep_muscle_attenuation",
    "auroc",
    "binary_counts",
    "bland_altman",
    "count_patients",
    "dice",
    "muscle_hu_mean",
    "numeric_summary",
    "pooled_summary",
    "sarcopenia_verdict",
    "shareable_count",
    "site_summary",
    "sma_cm2",
]
