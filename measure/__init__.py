"""Everything measured about a network: analytical cost, and time, memory and power on a device."""
