"""The wheel `pip wheel .` built (scripts/test.sh builds it and names it in LOWBIT_WHEEL), installed by pip
into a fresh virtual environment without torch: `import lowbit` works there, runs a job, and finds its
CUDA module beside the extension."""
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

WHEEL = os.environ.get("LOWBIT_WHEEL")

pytestmark = pytest.mark.skipif(not WHEEL, reason="no wheel built (scripts/test.sh sets LOWBIT_WHEEL)")


def test_the_wheel_installs_and_runs_without_torch(shared, tmp_path):
    wheel = pathlib.Path(WHEEL)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("lowbit/_lowbit") and n.endswith(".so") for n in names)
    for module in ("__init__.py", "functional.py", "jobs.py", "errors.py", "integrations/bitsandbytes.py"):
        assert f"lowbit/{module}" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--disable-pip-version-check", wheel], check=True)
    script = f"""
import sys, lowbit
from lowbit import _lowbit
assert lowbit.__file__.startswith({str(venv)!r}), lowbit.__file__   # the installed package, not the checkout's
r = lowbit.quantize({str(shared / "data" / "stories260K.gguf")!r}, "q.gguf", "q8_0", progress=False)
assert r["total"]["params"] > 0 and any(t["format"] == "q8_0" for t in r["tensors"])
assert lowbit.inspect("q.gguf")["total"]["bytes"] > 0
if _lowbit.cuda.built:
    _lowbit.cuda.devices()  # opens lowbit/liblowbit_cuda.so beside the extension (raises if it cannot)
assert "torch" not in sys.modules, "torch imported"
print("cuda" if _lowbit.cuda.built else "cpu")
"""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the tests' PYTHONPATH points at build/python
    run = subprocess.run([python, "-c", script], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = run.stdout.strip()
    if out == "cuda":
        assert "lowbit/liblowbit_cuda.so" in names
