"""The front panel: displays, keys, LEDs and buzzer, screens and menus (see base.py for the interfaces)."""
