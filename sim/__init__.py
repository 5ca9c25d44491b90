"""The hardware simulator: the unchanged device code on mock pins, a dummy
display, a pty console and a stand-in hall server."""
