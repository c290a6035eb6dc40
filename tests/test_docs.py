"""The guides run as written: every ```bash block of README.md and docs/*.md, in order, from the
repository root, with this environment's python first on PATH.

Markers on the line before a block: ``<!-- not run: reason -->`` (a download, a GPU, or `make demo`,
which CI runs itself before the tests), ``<!-- needs: path -->`` (made by `make demo`: without
it the rest of that file is skipped here, and fails on CI, where `make demo` has run) and
``<!-- file: path -->`` on a ```python block: the guide has the reader write that file.

docs/your_project.md runs outside the repository against an installed package: tests/test_install.py.
"""
import glob
import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.docs

GUIDES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
MARKER = re.compile(r"<!--\s*(not run|needs|file):\s*(.*?)\s*-->")
OUTSIDE_THE_REPOSITORY = {"docs/your_project.md"}  # tests/test_install.py runs it


def bash_blocks(path):
    """[(marker, argument, code)] for each ```bash block, and each ```python block marked ``file``, of
    the file, in order."""
    blocks, marker, lines = [], (None, None), open(os.path.join(ROOT, path)).read().splitlines()
    i = 0
    while i < len(lines):
        m = MARKER.search(lines[i])
        if m:
            marker = (m.group(1), m.group(2))
        elif lines[i].strip() == "```bash" or (lines[i].strip() == "```python" and marker[0] == "file"):
            end = lines.index("```", i + 1)
            blocks.append((*marker, "\n".join(lines[i + 1:end])))
            marker, i = (None, None), end
        elif lines[i].strip():
            marker = (None, None)  # a marker applies to the block right after it
        i += 1
    return blocks


def test_the_guides_have_runnable_blocks_and_are_linked():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for guide in GUIDES[1:]:
        assert guide in readme, f"README.md does not link {guide}"
        assert any(m != "not run" for m, _, _ in bash_blocks(guide)), f"{guide} has no block that runs"
    assert bash_blocks("docs/quickstart.md")[0][:2] == ("not run", "CI runs `make demo` itself (.ci/run), before the tests")


@pytest.mark.parametrize("guide", [g for g in GUIDES if g not in OUTSIDE_THE_REPOSITORY])
def test_guide_commands_run_as_written(guide):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for marker, arg, code in bash_blocks(guide):
        if marker == "not run":
            continue
        assert marker != "file", f"{guide}: a file block belongs to a guide run outside the repository"
        if marker == "needs" and not os.path.exists(os.path.join(ROOT, arg)):
            message = f"{guide}: {arg} is missing (run `make demo` first)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=1200)
        assert out.returncode == 0, f"{guide}: this block failed:\n{code}\n--- output ---\n{out.stdout[-4000:]}{out.stderr[-4000:]}"
