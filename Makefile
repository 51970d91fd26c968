# Two commands: `make run` (set up + run the demo on the embedded default) and `make test`
# (set up the dev environment + run the whole test suite). Both share .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_Q ?= -q
# mamba-ssm and causal-conv1d ship sources only; these flags install their pure-Python parts (the
# reference functions we test against) without compiling CUDA.
UPSTREAM_ENV := MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
	CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE

.PHONY: run test setup setup-dev clean

run: $(VENV)/.stamp-run
	$(VENV)/bin/muse-tvr demo

test: $(VENV)/.stamp-dev
	$(VENV)/bin/pytest -q tests

setup: $(VENV)/.stamp-run
setup-dev: $(VENV)/.stamp-dev

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.stamp-run: $(PY) setup.py pyproject.toml requirements-dev.txt
	$(PIP) install $(PIP_Q) -r requirements-dev.txt
	$(PIP) install $(PIP_Q) -e .
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run
	$(PIP) install $(PIP_Q) -e '.[dev,scale,serve]' -r requirements-dev.txt packaging wheel setuptools
	# serve: nvidia-pytriton without its numpy<2 pin (its deps are the serve extra), and the numpy-1 venv
	# its Python-backend stub runs in (muse_tvr/serve/stub_env.py says why)
	$(PIP) install $(PIP_Q) --no-deps nvidia-pytriton==0.7.0
	$(PY) -m muse_tvr.serve.stub_env
	$(UPSTREAM_ENV) $(PIP) install $(PIP_Q) --no-build-isolation --no-deps \
		mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info

# The GPU machine's command (a CPU rehearsal without CUDA); results under $(OUT), default ./device-out.
.PHONY: device-check
device-check:
	bash benchmarks/device_check.sh

# The reference CUDA Mamba built ahead on CPU (no GPU needed): forward-only selective_scan_cuda
# (mamba-ssm 2.3.2.post1) + causal_conv1d_cuda (causal-conv1d 1.7.0), sm_90, torch 2.11 / Python 3.12,
# into build/gpu-baselines/ (carry it to the GPU machine). Slow (a ~5 GB venv + nvcc); not part of `make test`.
.PHONY: gpu-baselines
gpu-baselines:
	bash scripts/build_gpu_baselines.sh
