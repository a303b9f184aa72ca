"""Equal-budget learning-rate sweeps: plan the trials, resume, select on validation only, run seeds, summarise.

Modules: plan.py (the trials: grid, seeds, run descriptions), halving.py (successive halving of the search: its
settings, start order and Optuna studies), selection.py (reading trials, choosing the rate on validation),
statistics.py (mean, sd, bootstrap intervals and paired comparisons, by analysis.stats), summary.py (the typed summary and its JSON file), run.py (the two phases through runners.batch.run_trials).

A sweep compares methods fairly (docs/sweep.md has the user's view):

1. Search. Every experiment gets the same number of trials: its configured learning rate times
   10^(k/2) for `lr_trials` consecutive k around 0 (so the configured rate is always one of them),
   or the same explicit `--lrs` list for everyone. Everything else is fixed, and every trial uses the
   experiment's configured seed.
   With successive halving (halving.py), the search stops rates that fall behind at validation rungs:
   the same rates, rungs and rule for every experiment, decided on validation only.
2. Selection. The rate with the best *validation* score (`peftbench.valid_score`) wins; the test score
   is never looked at. Ties go to the rate closest to the configured one (on a log scale: without
   evidence of a better rate, keep the default), then to the smaller rate.
3. Seeds. The chosen rate is run with K fresh seeds (configured seed + 1 ... + K). Fresh, because the
   search trial at the configured seed was picked for its luck on validation; reusing it would bias
   the test estimate upwards.
4. Summary. `sweep-summary.json` in the results folder: per experiment the "default" run (configured
   rate, configured seed: a search trial, or one extra run when `--lrs` leaves the configured rate
   out; it never takes part in selection) and the "tuned" runs (chosen rate, K seeds) with mean,
   standard deviation and 95% bootstrap interval of the test score, plus a paired bootstrap over test
   items against a reference experiment (default: the first `lora` one). Everything in it is computed
   from the result files, so anyone can recompute it.

Resume: a trial whose result file exists with status success or diverged (or pruned, in a halving sweep) is
finished (those are outcomes of the configuration; running it again would repeat them); a missing, unreadable, failed, cancelled, oom or
killed one is run again (`keep_killed=True` keeps oom and killed ones). `force=True` runs everything again.
"""
