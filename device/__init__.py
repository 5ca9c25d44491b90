"""Window Evaluator: the software of a 好差评 window evaluation device."""

__version__ = "0.3.0"
