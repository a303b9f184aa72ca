"""One run: planned once in the parent, carried out in its child process.

- plan.py              RunPlan: a request checked and resolved without loading any model (task, typed config,
                       optimizer arguments, hardware decisions); the JSON its child receives
- phases.py            the run's phases, each one job: load data, load model, reference, cache, train, evaluate,
                       forget, harness, output, save
- assemble.py          the result: RunResult filled by field name from what the phases measured
- engine.py            what the child runs: the phases in order, the result written whatever happens
- memory_estimates.py  `peftbench memory`: each experiment planned as a run would be, then traced without weights
"""
