# The README's quick start. Each target works from a fresh clone with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject.toml) so that pip takes the CPU-capable
# wheels already on this machine's disk instead of downloading a CUDA build.
TORCH := "torch==2.14.1" "torchvision==0.29.1"

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pyro_vae compare --models vae,ae,cvae,mixture,ppca --dataset digits --epochs 100 --out runs/demo --overwrite

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
