"""The two-VM rack: qemu VMs booted from the appliance image (sim.vm.qemu), wired as a pair (sim.vm.rack)."""
