"""Where an appliance keeps its files: the one place their default paths are written.

``/etc/tandem`` and ``/var/lib/tandem`` both live on the data partition (the image links
``/etc/tandem`` there), so everything below survives an update of the root file system.
"""

from __future__ import annotations

from pathlib import Path

ETC_DIR = Path("/etc/tandem")
STATE_DIR = Path("/var/lib/tandem")
RUN_DIR = Path("/run/tandem")
# The boot gate names the slot on trial here (not in RUN_DIR, which goes with the daemon's unit).
TRIAL_FLAG = Path("/run/tandem-trial")
# The boot gate's last outcome (key=value lines). Not in STATE_DIR: that is the daemon's (0750), and the
# helper that runs `bootgate pass` is root without CAP_DAC_OVERRIDE.
UPDATE_RESULT = Path("/var/lib/tandem-update/result")

CONFIG_FILE = ETC_DIR / "tandem.toml"
CLUSTER_KEY = ETC_DIR / "cluster.key"  # written by pairing (or `tandem keygen`)
CONTROL_SOCKET = RUN_DIR / "control.sock"  # the daemon's, or an unpaired box's `tandem setup`

BOX_RECORD_NAME = "box.json"  # first boot: the box's serial number and identity (in the state dir)
IDENTITY_KEY_NAME = "identity.key"  # first boot: the box's Ed25519 key for the bulk channel
PAIRING_RECORD_NAME = "paired.json"  # pairing: the peer, its settings, the key's fingerprint
IDENTITY_KEY = STATE_DIR / IDENTITY_KEY_NAME
PAIRING_RECORD = STATE_DIR / PAIRING_RECORD_NAME
BULK_INBOX = STATE_DIR / "inbox"
