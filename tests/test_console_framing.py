"""The splitter: bytes from the port into command lines, Improv frames and problems."""

from device.console import improv
from device.console.framing import Line, Problem, Splitter


def test_splitter_tells_lines_frames_and_problems_apart():
    s = Splitter(max_line=16, frame_timeout=1.0)
    frame = improv.encode_frame(improv.PacketType.RPC, b"\x02\x00")
    items = s.feed(b"Status\r\n" + frame + b"\nGet x\n" + b"y" * 20 + b"\nIMPRO\n", now=0.0)
    assert items == [Line("Status"), improv.Frame(3, b"\x02\x00"), Line("Get x"),
                     Problem("line_too_long", "line longer than 16 bytes ignored"), Line("IMPRO")]


def test_splitter_frames_may_contain_newlines_and_arrive_in_pieces():
    s = Splitter()
    frame = improv.encode_frame(improv.PacketType.RPC, improv.encode_rpc(1, b"\x0a" + b"A" * 10 + b"\x0a" + b"\n" * 10))
    items = []
    for i in range(len(frame)):
        items += s.feed(frame[i:i + 1], now=i * 0.01)
    assert items == [improv.decode_frame(frame)] and s.idle


def test_splitter_drops_a_half_frame_after_the_timeout_and_rereads_what_followed():
    s = Splitter(frame_timeout=0.5)
    assert s.feed(b"IMPROV\x01\x03\x30ab\nStatus\n", now=0.0) == []
    assert s.poll(0.4) == []
    assert s.poll(0.6) == [Problem("half_frame", "incomplete Improv frame (19 bytes) dropped"), Line("Status")]
    assert s.idle
