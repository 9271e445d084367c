"""``snnrsa-summarize``: a sweep's scores -> tables, tests, a Markdown report and figures.

Input: run directories (holding ``rsa.csv``), sweep folders (searched for ``rsa.csv``), or any long
CSV table with columns ``rule, layer, roi, subject, seed, epoch, rho`` (extra columns allowed).
Where condition columns (``neuron, encoding, readout, resolution, selection, pooling``) vary inside the
input, the rule label gains them (``bp|snntorch_lif|poisson``) so different set-ups never mix.

Output in ``summary/``:

- ``trajectories.csv``: rule, roi, convention, layer, epoch, mean, sd, n_seeds. Conventions:
  ``best_layer`` (the study: per rule, ROI and epoch the layer with the highest seed- and
  subject-mean rho, then that layer's per-seed values), ``fixed_layer`` (a fixed layer -> ROI map,
  default Conv1 -> V1/V2/EVC, Conv2 -> V3/hV4, Conv3 -> LOC, FC1 -> IT) and ``layer`` (every layer).
  mean and sd (ddof 1) are over seeds of the subject-mean rho.
- ``deltas.csv``: per rule, ROI, convention and epoch, the per-seed change from epoch 0 and from
  the untrained network (same seed, epoch 0), mean and sd over seeds, and the percent change.
- ``tests.csv``: family, rule_a, rule_b, roi, epoch_a, epoch_b, diff, cohens_d, p_one_sided,
  p_two_sided, p_fdr_family, p_fdr_all (plus convention, n_seeds). Every test is the exact paired
  sign-flip test over seeds of d = a - b; p_one_sided tests mean(d) > 0. Families:
  ``rule_vs_<ref>`` (a = rule, b = reference rule, both at the last epoch they share),
  ``epoch0_vs_epoch1`` (a = epoch 0, b = epoch 1, same rule: d > 0 is a loss of alignment) and
  ``trend`` (a = per-seed Spearman of rho against epoch over epochs > 0, b = 0; checkpoints
  taken after training stopped, where no layer's ``trained_images`` grew since the checkpoint
  before, are left out: greedy layer-wise STDP spends its image budget early).
  Benjamini-Hochberg within each family (p_fdr_family) and over all tests (p_fdr_all), both
  within a convention.
- ``noise_ceiling.csv`` (from the brain RDMs in the run directories' ``results.h5``:
  leave-one-subject-out lower and upper bound, per-subject Spearman; with kept session RDMs also
  the split-session ceiling ``split_r``, ``split_reliability``, ``split_ceiling``), ``report.md`` and figures
  (PNG + PDF).
"""

from snnrsa.summarize.cli import main, summarize
from snnrsa.summarize.figures import make_figures
from snnrsa.summarize.loading import find_tables, load_scores, prepare
from snnrsa.summarize.report import write_report
from snnrsa.summarize.statistics import (
    adjust,
    deltas,
    frozen_checkpoints,
    noise_ceilings,
    paired_test,
    run_tests,
    seed_scores,
    trajectories,
)

__all__ = ["adjust", "deltas", "find_tables", "frozen_checkpoints", "load_scores", "main", "make_figures",
           "noise_ceilings", "paired_test", "prepare", "run_tests", "seed_scores", "summarize",
           "trajectories", "write_report"]
