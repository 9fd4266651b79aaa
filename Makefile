.PHONY: setup test demo lint fuzz sanitize gpu-check

VENV_PY := .venv/bin/python

# Creates .venv with torch, mmcv (built once per machine, cached), mmengine, mmdet, lip_mmdet.
setup:
	@bash tools/setup_env.sh

# Lint first (seconds), then the tests on one pytest-xdist worker per core (at most 4: each
# worker holds torch and mmdet). A test file runs whole on one worker, so its module-scoped
# fixtures (a trained seed study, a reference training run) are made once. CI runs this.
test: setup
	@$(VENV_PY) -m ruff check .
	@$(VENV_PY) -m pytest -n auto --maxprocesses 4 --dist loadfile tests

# ruff (flake8 + isort rules, configured in pyproject.toml); `ruff check --fix .` fixes most.
lint: setup
	@$(VENV_PY) -m ruff check .

# The main job on the embedded default: generate the small-object data, train LIP-ResNet-18
# Faster R-CNN on CPU, evaluate (COCO + size-binned tables), plot AP by object size.
demo: setup
	@$(VENV_PY) tools/run_demo.py

# A long fuzz campaign of the ops and the checkpoint loader: the suite's fuzz tests with fresh
# random cases, LIP_MMDET_FUZZ_EXAMPLES per test (default 20000; 1% of it for the Triton
# interpreter's), tests spread over the workers one by one; prints how many ran.
fuzz: setup
	@HYPOTHESIS_PROFILE=fuzz $(VENV_PY) -m pytest -n auto --maxprocesses 4 --dist load \
		-m fuzz --hypothesis-show-statistics tests

# The CPU kernels built with AddressSanitizer + UndefinedBehaviorSanitizer under the op test
# files, hypothesis on its fuzz profile (LIP_MMDET_FUZZ_EXAMPLES per test, default 2000 here):
# any sanitizer report fails it. make test runs a bounded slice of the same check.
sanitize: setup
	@LIP_MMDET_SANITIZE_RUN=long HYPOTHESIS_PROFILE=fuzz \
		LIP_MMDET_FUZZ_EXAMPLES=$${LIP_MMDET_FUZZ_EXAMPLES:-2000} \
		$(VENV_PY) -m pytest -n 0 -s tests/test_ops/test_native_sanitized.py

# On a machine with an NVIDIA GPU: the set-up for CUDA (LIP_MMDET_CUDA=1: a CUDA torch, mmcv
# with its CUDA ops), then the CUDA tests, the pooling and backbone benchmarks on the device and
# the Triton kernels' resources, into work_dirs/gpu_check/report.{json,md}. Without a GPU it
# stops with one line (exit 2) before setting anything up.
gpu-check:
	@nvidia-smi -L 2>/dev/null | grep -q '^GPU' || { \
		echo "error: make gpu-check needs an NVIDIA GPU, and nvidia-smi lists none here" >&2; exit 2; }
	@LIP_MMDET_CUDA=1 bash tools/setup_env.sh
	@$(VENV_PY) tools/gpu_check.py
