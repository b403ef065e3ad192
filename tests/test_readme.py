"""The README's Python examples run as written (in order, in one namespace, as a reader would).

Blocks fenced ```python are examples and run here; blocks fenced ```py are sketches (elided
bodies) and do not."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 4


def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the block: the README is what has to change
            raise AssertionError(f"README python block {i + 1} fails: {err!r}\n{block}") from err
    assert (tmp_path / "vae.pt").is_file()
