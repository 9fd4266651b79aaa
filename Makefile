.PHONY: setup test demo

VENV_PY := .venv/bin/python

setup:
	@bash tools/setup_env.sh

test: setup
	@$(VENV_PY) -m pytest tests

demo: setup
	@echo "make demo: not yet implemented" && exit 1
