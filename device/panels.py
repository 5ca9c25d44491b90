"""Panel models, one record each: what a sixth model needs is one :func:`register` call.

A :class:`PanelModel` says everything the program (and the fake Pi) needs
to know of a model: its native size, its colour mode, the interfaces its
controller has, the luma driver that speaks to it, and which controller's
command set its bytes are (the fake Pi decodes them with that controller's
model, ``sim.fakepi.panels.CONTROLLERS``). The configuration's schema
(``display.model``, ``display.interface``), the display driver, the
supervisor's frame size, the bus bench and the fake Pi all read this table.

Nothing is imported here but the standard library: the configuration
imports this module, and luma is loaded only when a driver is made
(:meth:`PanelModel.driver_class`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: Colour modes: bits on the wire per pixel.
BITS = {"1": 1, "grey4": 4, "rgb565": 16}


@dataclass(frozen=True)
class PanelModel:
    """One panel model.

    Attributes:
        name: ``display.model``'s value (lower case).
        size: native ``(width, height)``.
        colour: ``"1"`` (monochrome), ``"grey4"`` (16 greys) or ``"rgb565"``.
        interfaces: the buses its controller has (``"i2c"``, ``"spi"``).
        driver: the luma driver class, ``"module:Class"`` (imported when a panel is made).
        controller: the controller whose command set and RAM it has (the fake Pi's decoder).
        mono_frames: the driver takes 1-bit frames directly (cheaper than converting to its colour mode).
        other_sizes: further ``(width, height)`` the driver can drive (luma.oled's own tables);
            ``display.width``/``height`` may name only these or the native size.
    """

    name: str
    size: tuple[int, int]
    colour: str
    interfaces: tuple[str, ...]
    driver: str
    controller: str
    mono_frames: bool = False
    other_sizes: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.colour not in BITS:
            raise ValueError(f"{self.name}: colour must be one of {', '.join(BITS)}, not {self.colour!r}")
        if not self.interfaces or set(self.interfaces) - {"i2c", "spi"}:
            raise ValueError(f"{self.name}: interfaces must be i2c and/or spi, not {self.interfaces!r}")
        if ":" not in self.driver:
            raise ValueError(f"{self.name}: driver must be 'module:Class', not {self.driver!r}")

    @property
    def all_sizes(self) -> tuple[tuple[int, int], ...]:
        """Every size the driver can drive, the native one first."""
        return (self.size, *self.other_sizes)

    @property
    def bits_per_pixel(self) -> int:
        return BITS[self.colour]

    def driver_class(self) -> type:
        """The luma driver class (imported now)."""
        module, _, name = self.driver.partition(":")
        cls: type = getattr(importlib.import_module(module), name)
        return cls


_MODELS: dict[str, PanelModel] = {}


def register(model: PanelModel) -> PanelModel:
    """Add (or replace) a model; from then on the configuration accepts it."""
    _MODELS[model.name.lower()] = model
    return model


def unregister(name: str) -> None:
    """Remove a model (tests that registered one)."""
    _MODELS.pop(name.lower(), None)


def get(name: str) -> PanelModel:
    """The model called ``name`` (case-insensitive).

    Raises:
        KeyError: no such model.
    """
    return _MODELS[str(name).lower()]


def models() -> Mapping[str, PanelModel]:
    """Every model, by name (a live view)."""
    return _MODELS


class Sizes(Mapping[str, tuple[int, int]]):
    """``{model: (width, height)}``, read live from the table (the configuration's ``DISPLAY_MODELS``)."""

    def __getitem__(self, name: str) -> tuple[int, int]:
        return _MODELS[name].size

    def __iter__(self) -> Iterator[str]:
        return iter(_MODELS)

    def __len__(self) -> int:
        return len(_MODELS)


SIZES = Sizes()

# The models the device supports (DESIGN.md "Reference hardware").
register(PanelModel("ssd1306", (128, 64), "1", ("i2c", "spi"), "device.drivers.paged:SSD1306", "ssd1306",
                    other_sizes=((128, 32), (96, 16), (64, 48), (64, 32))))
register(PanelModel("sh1106", (128, 64), "1", ("i2c", "spi"), "device.drivers.paged:SH1106", "sh1106",
                    other_sizes=((128, 32), (128, 128))))
register(PanelModel("ssd1309", (128, 64), "1", ("i2c", "spi"), "device.drivers.paged:SSD1309", "ssd1309"))
register(PanelModel("ssd1322", (256, 64), "grey4", ("spi",), "luma.oled.device:ssd1322", "ssd1322",
                    mono_frames=True, other_sizes=((256, 48), (256, 32), (128, 64), (128, 48), (128, 32),
                                                   (64, 64), (64, 48), (64, 32))))
register(PanelModel("ssd1327", (128, 128), "grey4", ("i2c", "spi"), "luma.oled.device:ssd1327", "ssd1327",
                    mono_frames=True))
register(PanelModel("ssd1351", (128, 128), "rgb565", ("spi",), "device.drivers.rgb565:SSD1351", "ssd1351",
                    other_sizes=((96, 96), (128, 96))))
