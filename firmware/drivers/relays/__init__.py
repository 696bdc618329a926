"""Relay drivers by bus: ``gpio`` (gpiozero), ``pcf8574`` (I2C expander), ``usb`` (CH340 serial board).

``base`` is the interface they all implement (`RelayDriver`, `RelayError`).
"""
