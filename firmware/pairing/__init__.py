"""Pairing two boxes over the serial crossover cable: key agreement, the operator's code check, settings."""
