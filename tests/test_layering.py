"""The architecture's import rules, checked by importing the code with the forbidden packages blocked.

* `firmware` never imports `sim`: simulated devices plug in through board
  profiles and the simulator's extension, never by the firmware knowing them.
* `firmware.core` never imports `firmware.panel`: the panel is composed in
  from outside the core (firmware/node.py).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import firmware

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = """
import importlib, importlib.abc, json, sys

BLOCKED, MODULES = json.loads(sys.argv[1])

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            raise ImportError(name + " must not be imported here")
        return None

sys.meta_path.insert(0, Blocker())
failed = []
for module in MODULES:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failed.append(module + ": " + str(exc))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules(package: str) -> list[str]:
    """The package and every module below it."""
    module = importlib.import_module(package)
    return [package] + [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]


def _import_blocked(modules: list[str], blocked: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, json.dumps([blocked, modules])], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_firmware_module_imports_without_the_simulator() -> None:
    modules = _modules("firmware")
    assert "firmware.core.daemon" in modules and "firmware.node" in modules and len(modules) > 40
    result = _import_blocked(modules, ["sim"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_imports_without_the_panel() -> None:
    modules = [m for m in _modules("firmware") if m.startswith("firmware.core")]
    result = _import_blocked(modules, ["firmware.panel", "firmware.node"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_blocker_really_blocks() -> None:
    # The check above would pass vacuously if blocking did not work: sim.rack imports sim.
    result = _import_blocked(["sim.rack"], ["sim"])
    assert result.returncode == 1 and "sim.rack" in result.stdout


def test_firmware_package_is_this_checkout() -> None:
    assert Path(firmware.__file__).resolve().parent == ROOT / "firmware"
