"""Makes a daemon play another release's heartbeat protocol, for the mixed-release tests.

A test puts this folder on the daemon's PYTHONPATH and names the version in
``TANDEM_PLAY_PROTOCOL`` (e.g. ``0x10``). Python imports this module at start,
before the daemon's own code, so every module that reads
``firmware.core.message.PROTOCOL_VERSION`` (the sealer, the packet check, the
status) sees the played version, exactly as a build of that release would.
"""

import os

_PLAYED = os.environ.get("TANDEM_PLAY_PROTOCOL")
if _PLAYED:
    import firmware.core.message as _message

    _message.PROTOCOL_VERSION = int(_PLAYED, 0)
