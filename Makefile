# The two commands a new user needs (see README.md). Both create or reuse .venv.
.PHONY: quickstart test setup

setup:
	bash scripts/setup-venv.sh

quickstart: setup
	.venv/bin/peftbench suite quick --results results/quick --html results/quick/report.html

test: setup
	bash scripts/setup-test-browser.sh
	.venv/bin/python -m pytest -q
