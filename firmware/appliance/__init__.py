"""The box around the daemon: first boot, the reason of the last reboot, factory reset.

These run on the appliance image (image/), as root where they must (first boot, reset) and never inside
the daemon's decision path.
"""
