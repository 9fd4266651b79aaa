.PHONY: setup test demo

VENV_PY := .venv/bin/python

# Creates .venv with torch, mmcv (built once per machine, cached), mmengine, mmdet, lip_mmdet.
setup:
	@bash tools/setup_env.sh

test: setup
	@$(VENV_PY) -m pytest tests

# The main job on the embedded default: generate the small-object data, train LIP-ResNet-18
# Faster R-CNN on CPU, evaluate (COCO + size-binned tables), plot AP by object size.
demo: setup
	@$(VENV_PY) tools/run_demo.py
