"""Crystalfontz CFA-635 / CFA-533 packet panels on a USB serial port.

- ``protocol``: models, CRC, packet encoding and decoding (pure; the
  simulator's emulator uses only this);
- ``connection``: `CfaPanel`, the serial connection with its retries and
  reconnects, shared per port;
- ``adapters``: `CfaDisplay`, `CfaKeys` and `CfaIndicators`, the panel
  interfaces a board profile names.

Nothing is imported here, so importing the protocol does not import pyserial.
"""
