"""Updates: signed RAUC bundles checked, installed into the inactive slot, and the new slot gated (issue 16)."""
