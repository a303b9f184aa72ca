"""One run: planned once in the parent, carried out in its child process.

- engine.py            what the child runs: build, train, evaluate, measure, write the result
- memory_estimates.py  `peftbench memory`: each experiment planned as a run would be, then traced without weights
"""
