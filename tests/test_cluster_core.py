"""Unit tests of the decision core's own interface (imports, records, typed outputs).

The behaviour of the core is tested in the two-node model
(test_cluster_scenarios.py, test_cluster_properties.py); these tests pin the
shape the shell relies on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_core_imports_without_cryptography() -> None:
    # The core reads and builds heartbeats; only the wire format (protocol) needs the AEAD.
    code = textwrap.dedent("""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "cryptography" or name.startswith("cryptography."):
                    raise ImportError(f"{name} is blocked for this test")
                return None

        sys.meta_path.insert(0, Blocker())
        import firmware.core.cluster
        import firmware.core.message
        import firmware.core.peer
        assert not [m for m in sys.modules if m.split(".")[0] == "cryptography"]
        try:
            import firmware.core.protocol
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not block: this test proves nothing")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
