"""A plain (non-editable) `pip install .` carries every package and data file the code needs.

The wheel is built from a copy of the tracked files, without build isolation
(setuptools comes with the test extras), so nothing is fetched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> where its files land in the installed package.
DATA_DIRS = {"templates": "newsletter/_templates", "subscribers": "newsletter/_subscribers"}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and not name.startswith("tests/")]


def test_a_plain_install_carries_every_package_and_data_file(tmp_path):
    src = tmp_path / "src"
    for name in tracked_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("newsletter-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())

    expected = set()
    for name in tracked_files():
        top, _, rest = name.partition("/")
        if top == "newsletter":
            expected.add(name)
        elif top in DATA_DIRS and rest:
            expected.add(f"{DATA_DIRS[top]}/{rest}")
    packages = {str(Path(name).parent) for name in expected if name.endswith(".py")}
    assert {"newsletter/store", "newsletter/cli", "newsletter/render", "newsletter/sources"} <= packages
    missing = sorted(expected - shipped)
    assert not missing, f"not installed by `pip install .`: {missing}"
