from typing import Any

from luma.core.device import device

class _Chip(device):
    def __init__(self, serial_interface: Any = ..., width: int = ..., height: int = ..., rotate: int = ...,
                 mode: str = ..., **kwargs: Any) -> None: ...

class ssd1306(_Chip):
    _colstart: int
    _colend: int
    _pages: int

class ssd1309(ssd1306): ...

class sh1106(_Chip):
    _pages: int

class ssd1322(_Chip): ...
class ssd1327(_Chip): ...
class ssd1351(_Chip):
    framebuffer: Any
    def _apply_offsets(self, bbox: Any) -> Any: ...
    def _set_position(self, top: int, right: int, bottom: int, left: int) -> None: ...
