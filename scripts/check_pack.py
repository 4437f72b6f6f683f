"""Build the Comfy Registry zip with comfy-cli (`comfy node pack`) and print its size and file list.

Usage: python scripts/check_pack.py [--comfy PATH_TO_comfy]   (comfy-cli: `pip install comfy-cli`,
best in its own virtual environment). Exits non-zero if the zip holds a file the pack does not run
(tests, fixtures, benchmarks, CI, developer files): the same rule as tests/test_packaging.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=shutil.which("comfy") or "comfy", help="the comfy-cli executable")
    args = parser.parse_args()
    from test_packaging import SHIPPED_TOP

    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home)  # comfy-cli keeps its settings under HOME: leave the user's alone
        for command in (["node", "validate"], ["node", "pack"]):
            out = subprocess.run(
                [args.comfy, "--skip-prompt", "--no-enable-telemetry", *command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            print(out.stdout.strip())
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return out.returncode
    zip_path = ROOT / "node.zip"
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = z.infolist()
        print(
            f"{zip_path.name}: {zip_path.stat().st_size} bytes, {len(infos)} files, "
            f"{sum(i.file_size for i in infos)} bytes unpacked"
        )
        for info in infos:
            print(f"  {info.file_size:>9}  {info.filename}")
    finally:
        zip_path.unlink(missing_ok=True)
    stray = sorted({i.filename.split("/")[0] for i in infos} - SHIPPED_TOP)
    if stray:
        print(f"not for the zip: {stray}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
