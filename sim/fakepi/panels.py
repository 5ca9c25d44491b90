"""Panel controllers that read the bytes a bus carried back into panel RAM and the picture on the glass.

Each class follows its controller's datasheet as far as luma.oled (and the
project's own drivers) use it: the command set that moves the RAM pointer,
the address window and its wrap, and how pixels are packed. A picture that
decodes to the frame the program rendered proves the bytes on the wire, not
just the driver's intent.

Two ways of carrying a command's parameters exist: in the command stream
(SSD1306, SSD1309, SH1106, SSD1327) and as data bytes after the command
(SSD1322, SSD1351: luma sends them with DC high). A command stream that ends
inside a command's parameters drops it (each transaction is parsed alone).

Which controller a panel model has is the program's knowledge, read from its
one record (``device.panels``, data only, nothing of the program runs);
the controllers themselves are the fake Pi's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from PIL import Image, ImageChops

from device import panels
from sim.fakepi.kernel import BusRecord


def split_i2c(payload: bytes) -> Iterator[tuple[str, bytes]]:
    """An I²C write as the controller reads it: control byte(s), then commands or data."""
    i = 0
    while i < len(payload):
        control = payload[i]
        kind = "data" if control & 0x40 else "command"
        if control & 0x80:          # Co = 1: one byte, then another control byte
            yield kind, payload[i + 1:i + 2]
            i += 2
        else:
            yield kind, payload[i + 1:]
            return


class Panel:
    """A controller's RAM, fed commands and data; :meth:`glass` is what it shows.

    Attributes:
        width, height: the visible picture.
        on: display on (``0xAF``) or off (``0xAE``).
        contrast: the last contrast set.
    """

    #: Parameters each command takes, for controllers that carry them in the command stream.
    PARAMS: ClassVar[dict[int, int]] = {}
    #: Whether parameters come as data bytes after the command.
    params_as_data = False
    #: The command after which data bytes go to RAM (params_as_data controllers).
    WRITE_RAM = 0x5C
    CONTRAST = 0x81

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.on = False
        self.contrast = -1
        self._cmd: int | None = None
        self._params: list[int] = []

    def feed(self, record: BusRecord) -> None:
        """One bus transaction: I²C control bytes, or the SPI DC line, say command or data."""
        if record.bus == "i2c":
            for kind, chunk in split_i2c(record.data):
                (self.data if kind == "data" else self.command)(chunk)
        elif record.rst != 0:       # held in reset, the controller hears nothing
            (self.data if record.dc else self.command)(record.data)

    def command(self, data: bytes) -> None:
        if self.params_as_data:
            for b in data:
                self._cmd, self._params = b, []
                self._apply(b, [])
            return
        i = 0
        while i < len(data):
            b = data[i]
            n = self.PARAMS.get(b, 0)
            params = list(data[i + 1:i + 1 + n])
            if len(params) < n:
                return
            self._apply(b, params)
            i += 1 + n

    def data(self, data: bytes) -> None:
        if self.params_as_data and self._cmd != self.WRITE_RAM:
            self._params += data
            if self._cmd is not None and len(self._params) >= self.PARAMS.get(self._cmd, 0) > 0:
                self._apply(self._cmd, self._params)
                self._cmd = None
            return
        self._write(data)

    def _apply(self, cmd: int, params: list[int]) -> None:
        if cmd in (0xAE, 0xAF):
            self.on = cmd == 0xAF
        elif cmd == self.CONTRAST and params:
            self.contrast = params[0]

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def glass(self) -> Image.Image:
        """The picture on the panel, in the panel's own orientation."""
        raise NotImplementedError

    def lit(self) -> Image.Image:
        """Which pixels are lit at all, as a 1-bit image."""
        image = self.glass()
        if image.mode == "RGB":
            r, g, b = image.split()
            image = ImageChops.lighter(r, ImageChops.lighter(g, b))
        return image.convert("L").point(lambda v: 255 if v else 0).convert("1")


class SSD1306(Panel):
    """SSD1306 (and SSD1309): 128 columns x 8 pages, horizontal/vertical/page addressing."""

    PARAMS: ClassVar[dict[int, int]] = {
        0x20: 1, 0x21: 2, 0x22: 2, 0x81: 1, 0x8D: 1, 0xA3: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD6: 1, 0xD9: 1,
        0xDA: 1, 0xDB: 1, 0xFD: 1, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0xAD: 1,
    }
    COLUMNS = 128

    def __init__(self, width: int = 128, height: int = 64) -> None:
        super().__init__(width, height)
        self.ram = [bytearray(self.COLUMNS) for _ in range(8)]
        self.addressing = 2                      # page addressing after reset
        self.cols, self.pages = (0, self.COLUMNS - 1), (0, 7)
        self.col = self.page = 0

    def _apply(self, cmd: int, params: list[int]) -> None:
        if cmd == 0x20:
            self.addressing = params[0] & 3
        elif cmd == 0x21:
            self.cols = (params[0] & 0x7F, params[1] & 0x7F)
            self.col = self.cols[0]
        elif cmd == 0x22:
            self.pages = (params[0] & 7, params[1] & 7)
            self.page = self.pages[0]
        elif 0xB0 <= cmd <= 0xB7:
            self.page = cmd & 7
        elif cmd <= 0x0F:
            self.col = self.col & 0xF0 | cmd
        elif cmd <= 0x1F:
            self.col = (cmd & 0x0F) << 4 | self.col & 0x0F
        else:
            super()._apply(cmd, params)

    def _write(self, data: bytes) -> None:
        (c0, c1), (p0, p1) = self.cols, self.pages
        for byte in data:
            if self.col < self.COLUMNS and self.page < 8:
                self.ram[self.page][self.col] = byte
            if self.addressing == 0:              # horizontal: along the window's columns, then the next page
                self.col += 1
                if self.col > c1:
                    self.col, self.page = c0, self.page + 1 if self.page < p1 else p0
            elif self.addressing == 1:            # vertical: down the window's pages, then the next column
                self.page += 1
                if self.page > p1:
                    self.page, self.col = p0, self.col + 1 if self.col < c1 else c0
            else:                                 # page: along the page only
                self.col = self.col + 1 if self.col < c1 else c0

    def _visible_column(self, x: int) -> int:
        return x

    def glass(self) -> Image.Image:
        image = Image.new("1", (self.width, self.height))
        pixels = image.load()
        assert pixels is not None
        for page in range(self.height // 8):
            row = self.ram[page]
            for x in range(self.width):
                byte = row[self._visible_column(x)]
                if byte:
                    for bit in range(8):
                        if byte >> bit & 1:
                            pixels[x, page * 8 + bit] = 255
        return image


class SSD1309(SSD1306):
    """SSD1309: the SSD1306's command set and RAM."""


class SH1106(SSD1306):
    """SH1106: 132 columns x 8 pages, page addressing only; a 128-wide panel shows columns 2..129."""

    PARAMS: ClassVar[dict[int, int]] = {
        0x81: 1, 0xA8: 1, 0xAD: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1, 0xDC: 1,
    }
    COLUMNS = 132
    OFFSET = 2

    def _apply(self, cmd: int, params: list[int]) -> None:
        if cmd in (0x20, 0x21, 0x22):
            return            # no such commands: no windows, no other addressing
        super()._apply(cmd, params)

    def _write(self, data: bytes) -> None:
        for byte in data:
            if self.col < self.COLUMNS:
                self.ram[self.page][self.col] = byte
            self.col += 1     # along the page; no wrap into the next

    def _visible_column(self, x: int) -> int:
        return x + self.OFFSET


class _Windowed(Panel):
    """Column and row windows over RAM; the pointer runs along a row of the window, then down."""

    RAM_WIDTH = 128           # pixels
    COLUMN_PX = 1             # pixels per column address

    def __init__(self, width: int, height: int, ram_height: int = 128) -> None:
        super().__init__(width, height)
        self.ram_height = ram_height
        self.ram: dict[tuple[int, int], int] = {}
        self.cols, self.rows = (0, self.RAM_WIDTH // self.COLUMN_PX - 1), (0, ram_height - 1)
        self.x = self.y = 0

    def _apply(self, cmd: int, params: list[int]) -> None:
        if cmd == 0x15 and len(params) >= 2:
            self.cols = (params[0], params[1])
            self.x = params[0] * self.COLUMN_PX
        elif cmd == 0x75 and len(params) >= 2:
            self.rows = (params[0], params[1])
            self.y = params[0]
        else:
            super()._apply(cmd, params)

    def _put(self, value: int) -> None:
        """One pixel at the pointer, then the pointer moves on."""
        self.ram[self.x, self.y] = value
        self.x += 1
        if self.x > self.cols[1] * self.COLUMN_PX + self.COLUMN_PX - 1:
            self.x = self.cols[0] * self.COLUMN_PX
            self.y = self.y + 1 if self.y < self.rows[1] else self.rows[0]

    def _grey(self, offset: int) -> Image.Image:
        image = Image.new("L", (self.width, self.height))
        pixels = image.load()
        assert pixels is not None
        for (x, y), value in self.ram.items():
            if 0 <= x - offset < self.width and y < self.height:
                pixels[x - offset, y] = value * 17
        return image


class SSD1327(_Windowed):
    """SSD1327: 128x128, 4-bit grey, two pixels a byte (the left one in the low nibble, as luma remaps)."""

    PARAMS: ClassVar[dict[int, int]] = {
        0x15: 2, 0x75: 2, 0x81: 1, 0xA0: 1, 0xA1: 1, 0xA2: 1, 0xA8: 1, 0xAB: 1, 0xB1: 1, 0xB3: 1, 0xB6: 1,
        0xB8: 15, 0xBC: 1, 0xBE: 1, 0xD5: 1, 0xFD: 1,
    }
    COLUMN_PX = 2

    def __init__(self, width: int = 128, height: int = 128) -> None:
        super().__init__(width, height)

    def _write(self, data: bytes) -> None:
        for byte in data:
            self._put(byte & 0x0F)
            self._put(byte >> 4)

    def glass(self) -> Image.Image:
        return self._grey(0)


class SSD1322(_Windowed):
    """SSD1322: 480x128 RAM, 4-bit grey, columns of 4 pixels; a 256-wide panel shows the middle."""

    PARAMS: ClassVar[dict[int, int]] = {
        0x15: 2, 0x75: 2, 0xC1: 1, 0xFD: 1, 0xB3: 1, 0xCA: 1, 0xA2: 1, 0xA1: 1, 0xA0: 2, 0xB5: 1, 0xAB: 1,
        0xB4: 2, 0xC7: 1, 0xB1: 1, 0xD1: 2, 0xBB: 1, 0xB6: 1, 0xBE: 1,
    }
    params_as_data = True
    CONTRAST = 0xC1
    RAM_WIDTH = 480
    COLUMN_PX = 4

    def __init__(self, width: int = 256, height: int = 64) -> None:
        super().__init__(width, height)

    def _write(self, data: bytes) -> None:
        for byte in data:
            self._put(byte >> 4)        # the first pixel in the high nibble
            self._put(byte & 0x0F)

    def glass(self) -> Image.Image:
        return self._grey((self.RAM_WIDTH - self.width) // 2)


class SSD1351(_Windowed):
    """SSD1351: 128x128, 16-bit colour (RGB565, high byte first)."""

    PARAMS: ClassVar[dict[int, int]] = {
        0x15: 2, 0x75: 2, 0xC1: 3, 0xFD: 1, 0xB3: 1, 0xCA: 1, 0xA0: 1, 0xA1: 1, 0xA2: 1, 0xB5: 1, 0xAB: 1,
        0xB1: 1, 0xB4: 3, 0xBE: 1, 0xC7: 1, 0xB6: 1,
    }
    params_as_data = True
    CONTRAST = 0xC1

    def __init__(self, width: int = 128, height: int = 128) -> None:
        super().__init__(width, height)
        self._half: int | None = None

    def _apply(self, cmd: int, params: list[int]) -> None:
        if cmd == self.WRITE_RAM:
            self._half = None
        super()._apply(cmd, params)

    def _write(self, data: bytes) -> None:
        for byte in data:
            if self._half is None:
                self._half = byte
            else:
                self._put(self._half << 8 | byte)
                self._half = None

    def glass(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height))
        pixels = image.load()
        assert pixels is not None
        for (x, y), v in self.ram.items():
            if x < self.width and y < self.height:
                pixels[x, y] = (v >> 8 & 0xF8, v >> 3 & 0xFC, v << 3 & 0xF8)
        return image


#: The decoder of each controller, by the name a panel model's record gives (``device.panels.PanelModel.controller``).
CONTROLLERS: dict[str, Callable[..., Panel]] = {
    "ssd1306": SSD1306, "ssd1309": SSD1309, "sh1106": SH1106,
    "ssd1322": SSD1322, "ssd1327": SSD1327, "ssd1351": SSD1351,
}
#: The controllers by the name of the model that has each at its native size (the same names today).
PANELS = CONTROLLERS


def decoder(model: str) -> Panel:
    """A fresh controller for a panel model, found through the model's record (its controller and size)."""
    record = panels.get(model)
    width, height = record.size
    return CONTROLLERS[record.controller](width, height)


def decode(model: str, records: Iterable[BusRecord], *, bus: str = "i2c", port: int = 1,
           target: int = 0x3C) -> Panel:
    """The panel of ``model`` after the transactions on one bus address (I²C) or chip select (SPI)."""
    panel = decoder(model)
    for record in records:
        if (record.bus, record.port, record.target) == (bus, port, target):
            panel.feed(record)
    return panel


def on_glass(frame: Image.Image, degrees: int) -> Image.Image:
    """A frame rendered for ``display.rotate = degrees``, as it lands on the panel (turned clockwise)."""
    return frame.rotate(-degrees, expand=True) if degrees else frame


def same_picture(a: Image.Image, b: Image.Image) -> bool:
    """Whether two pictures light the same pixels."""
    return a.size == b.size and a.convert("1").tobytes() == b.convert("1").tobytes()
