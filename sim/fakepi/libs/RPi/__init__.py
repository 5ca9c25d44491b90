"""The fake Pi's ``RPi`` package (rpi-lgpio on a real Pi): only ``RPi.GPIO``."""
