"""Every script in examples/ runs to completion, in a fresh process, in its quick mode.

Convention for examples: with the environment variable ``PYRO_VAE_QUICK=1`` a script trains
for a few epochs and evaluates with few samples, so that it finishes in seconds (under 15 s
on a laptop CPU). Each runs in its own process: examples register things (a custom prior in
``PRIORS``) that must not leak into the other tests.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

# Stop-gap for scripts that do not read PYRO_VAE_QUICK yet: command-line arguments that make
# them short.
QUICK_ARGS = {"plain_pyro_svi.py": ["--epochs", "2"]}


def test_there_are_examples():
    assert "custom_prior.py" in {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_runs(script, tmp_path):
    env = {**os.environ, "PYRO_VAE_QUICK": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(script), *QUICK_ARGS.get(script.name, [])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{script.name} printed nothing"
    if script.name == "custom_prior.py":
        line = done.stdout.strip().splitlines()[-1]
        assert line.startswith("Laplace prior, 2 epochs") and "test log p(x) ~ -" in line
        log_px = float(line.split("test log p(x) ~ ")[1].split()[0])
        assert -64 * math.log(2) < log_px < 0  # better than coin flips on the 64 pixels

