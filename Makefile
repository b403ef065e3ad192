# The README's quick start. Each target works from a fresh clone with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject.toml) so that pip takes the CPU-capable
# wheels already on this machine's disk instead of downloading a CUDA build.
TORCH := "torch==2.14.1" "torchvision==0.29.1"

.PHONY: demo test lint bench gallery reproduce install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pyro_vae compare --models vae,ae,cvae,mixture,ppca --dataset digits --epochs 100 --seeds 0,1,2 --out runs/demo --overwrite

# The tests run in TEST_WORKERS processes (pytest-xdist), one test file per process at a time so
# that module fixtures are built once; each process uses one torch thread (tests/conftest.py).
# make test TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(PY) -m ruff check pyro_vae tests benchmarks examples

bench: install
	$(PY) benchmarks/train_throughput.py --epochs 10 --subset 10000
	$(PY) benchmarks/train_throughput.py --suite loader --epochs 8 --subset 10000
	$(PY) benchmarks/train_throughput.py --suite conv --epochs 7 --subset 4000
	$(PY) benchmarks/train_throughput.py --suite denormal --epochs 5 --subset 10000 --batch-size 100
	$(PY) benchmarks/loglik_throughput.py --examples 200 --repeats 5
	$(PY) benchmarks/conv_kernels.py --repeats 5
	$(PY) benchmarks/train_memory.py --epochs 3

# issue 16: the literature's Fashion-MNIST entries as resumable runs under ~/pyro-vae-runs/reproduce
# (hours to days on a CPU; benchmarks/reproduce.py --only NAME runs one) -> docs/results/fashion-mnist.json
reproduce: install
	$(PY) benchmarks/reproduce.py

clean:
	rm -rf $(VENV) runs build *.egg-info

# The README's gallery: figures of runs on Fashion-MNIST, 28x28 (apt-get install
# dataset-fashion-mnist; about 15 minutes on 2 cores): 20,000 training images, K = 100.
GALLERY := docs/gallery
G := runs/gallery
GTRAIN := $(PY) -m pyro_vae train --dataset fashion-mnist --subset 20000 --eval-samples 100 --overwrite --no-progress
gallery: install
	mkdir -p $(GALLERY)
	$(GTRAIN) --model vae --latent-dim 2 --hidden-dims 256 --epochs 40 --out $(G)/vae2
	$(GTRAIN) --model vae --latent-dim 16 --hidden-dims 256 --epochs 40 --out $(G)/vae16
	$(GTRAIN) --model vae --latent-dim 2 --guide delta --hidden-dims 256 --epochs 40 --out $(G)/ae2
	$(GTRAIN) --model cvae --latent-dim 8 --hidden-dims 256 --epochs 40 --out $(G)/cvae
	$(GTRAIN) --model mixture --components 10 --lr 0.03 --epochs 20 --out $(G)/mix
	$(GTRAIN) --model ppca --latent-dim 16 --out $(G)/ppca
	$(GTRAIN) --model m2 --latent-dim 16 --hidden-dims 256 --labels-per-class 100 --alpha 1.0 --epochs 30 --out $(G)/m2
	for kind in curves reconstructions samples interpolation kl; do \
	  $(PY) -m pyro_vae plot $(G)/vae16 --kind $$kind --out $(GALLERY)/$$kind.png; done
	$(PY) -m pyro_vae plot $(G)/vae16 --kind arithmetic --from-label 7 --to-label 9 --out $(GALLERY)/arithmetic.png
	$(PY) -m pyro_vae plot $(G)/vae2 --kind manifold --out $(GALLERY)/manifold.png
	$(PY) -m pyro_vae plot $(G)/ae2 --kind latent --compare $(G)/vae2 --out $(GALLERY)/latent-ae-vs-vae.png
	$(PY) -m pyro_vae plot $(G)/cvae --kind classes --out $(GALLERY)/classes.png
	$(PY) -m pyro_vae plot $(G)/mix --kind components --out $(GALLERY)/components.png
	$(PY) -m pyro_vae plot $(G)/ppca --kind pca --out $(GALLERY)/pca.png
	$(PY) -m pyro_vae plot $(G)/m2 --kind analogies --out $(GALLERY)/analogies.png
