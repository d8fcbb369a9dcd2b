"""The settings engine ships in the OS image: it may import only the stdlib, ruamel.yaml and
tomlkit. (Checked here directly, in a fresh interpreter, besides the import-linter contract.)"""

from __future__ import annotations

import json
import subprocess
import sys

ALLOWED = {"kubeos", "ruamel", "tomlkit", "_ruamel_yaml"}

PROBE = """
import json, sys
before = set(sys.modules)
import kubeos.agent.settings, kubeos.agent.settings.command
print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))
"""


def test_settings_imports_only_stdlib_ruamel_and_tomlkit() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=True)
    top_level = set(json.loads(done.stdout))
    foreign = {m for m in top_level - ALLOWED
               if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert foreign == set()
