"""Drives moonlight-python, a real Moonlight client, for the GameStream tests.

Every command prints one JSON object on stdout (the report) and exits 0 when the report could
be written, whatever it says: the Rust tests decide what is a pass. Commands:

  pair   --pin NNNN          PIN pairing (blocks until the host has the PIN), then the app list
  https  VERB [QUERY]        one raw HTTPS request with this client's certificate (paired or not)
  stream --app ... --frames  launch at a mode and codec, pull and decode frames and audio, read
                             the frame counter back from every picture, send input, quit
                             (--frames 0 --input --seat-go FILE: announce a pad, wait for FILE,
                             send the seat sequence; the UML seat test)

We use moonlight-python's pieces (pairing, NvHTTP, StreamingSession over
libmoonlight-common-c, the PyAV decoders) but not its StreamManager: that keeps only the newest
30 frames and waits for a "non-black" picture, and the tests want to see every frame the client
library hands out. One stream per process: the C core is global state.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
import traceback
from pathlib import Path

import cffi
import numpy as np

from moonlight_python import MoonlightClient
from moonlight_python.audio_decoder import AudioDecoder
from moonlight_python.config import CODEC_MAP, StreamConfig
from moonlight_python.decoder import Decoder
from moonlight_python.discovery import connect_to_server
from moonlight_python.http_client import NvHTTP
from moonlight_python.identity import Identity
from moonlight_python.stream import StreamingSession, _find_shared_lib

# The frame counter the test source draws (services/framecount): a row of 36 square blocks at
# the top left, a white-black-white-black marker then 32 bits MSB first; luma threshold 128.
MARKER = [True, False, True, False]
BLOCKS = 4 + 32
# VK_A with the 0x80 high byte Moonlight clients set, as the C short it is passed as.
KEY_A = 0x8041 - 0x10000


def block_size(width: int, height: int) -> int | None:
    b = min(width // BLOCKS, 16) & ~1
    return b if b >= 4 and height >= b else None


def read_counter(bgr: np.ndarray) -> int | None:
    """The counter drawn into a decoded picture, or None if its marker is not there."""
    h, w = bgr.shape[0], bgr.shape[1]
    b = block_size(w, h)
    if b is None:
        return None
    row = bgr[:b, : BLOCKS * b].astype(np.uint32)
    # BT.601 luma from BGR; the picture is video range, the threshold sits in the middle.
    luma = (row[:, :, 2] * 77 + row[:, :, 1] * 150 + row[:, :, 0] * 29) >> 8
    q = b // 4
    bits = []
    for i in range(BLOCKS):
        block = luma[q : b - q, i * b + q : (i + 1) * b - q]
        bits.append(int(block.mean()) >= 128)
    if bits[:4] != MARKER:
        return None
    value = 0
    for bit in bits[4:]:
        value = (value << 1) | int(bit)
    return value


def emit(report: dict) -> None:
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def failure(e: BaseException) -> dict:
    return {"ok": False, "error": str(e), "kind": type(e).__name__,
            "trace": traceback.format_exc()[-2000:]}


def server_info(args, identity: Identity):
    server = connect_to_server(args.host, identity, args.port)
    cert = Path(args.config) / "server.pem"
    if cert.exists():
        server.server_cert_pem = cert.read_bytes()
    return server


def cmd_pair(args) -> dict:
    client = MoonlightClient(config_dir=args.config)
    identity = client._identity
    server = server_info(args, identity)
    client.pair(server, pin=args.pin)
    (Path(args.config) / "server.pem").write_bytes(server.server_cert_pem)
    apps = [a.name for a in client.apps()]
    return {"ok": True, "apps": apps, "https_port": server.https_port,
            "app_version": server.app_version}


def cmd_https(args) -> dict:
    identity = Identity(args.config)
    server = connect_to_server(args.host, identity, args.port)
    http = NvHTTP(args.host, identity, http_port=args.port, https_port=server.https_port)
    xml = http.open_https(args.verb, args.query or None)
    try:
        NvHTTP.verify_response_status(xml)
        status = 200
    except Exception as e:  # HttpResponseError carries the XML status
        status = getattr(e, "status_code", -1)
    return {"ok": True, "status_code": status, "xml": xml[:4000]}


class InputLib:
    """Moonlight's input calls, declared against the very library instance the stream uses
    (dlopen of the same path returns the same handle)."""

    CDEF = """
    int LiSendKeyboardEvent(short keyCode, char keyAction, char modifiers);
    int LiSendMouseButtonEvent(char action, int button);
    int LiSendMouseMoveEvent(short deltaX, short deltaY);
    int LiSendScrollEvent(signed char scrollClicks);
    int LiSendMultiControllerEvent(short controllerNumber, short activeGamepadMask,
        int buttonFlags, unsigned char leftTrigger, unsigned char rightTrigger,
        short leftStickX, short leftStickY, short rightStickX, short rightStickY);
    int LiSendControllerArrivalEvent(uint8_t controllerNumber, uint16_t activeGamepadMask,
        uint8_t type, uint32_t supportedButtonFlags, uint16_t capabilities);
    int LiSendHighResScrollEvent(short scrollAmount);
    int LiSendHighResHScrollEvent(short scrollAmount);
    int LiSendMousePositionEvent(short x, short y, short referenceWidth, short referenceHeight);
    """

    def __init__(self) -> None:
        self.ffi = cffi.FFI()
        self.ffi.cdef(self.CDEF)
        self.lib = self.ffi.dlopen(_find_shared_lib())

    def send_all(self) -> dict:
        """One key press (A), one left click, one gamepad button (A on pad 0): the events the
        tests look for on the host. Returns the library's return codes (0 = queued)."""
        lib = self.lib
        rc = {}
        rc["key_down"] = lib.LiSendKeyboardEvent(KEY_A, b"\x03", b"\x00")
        rc["key_up"] = lib.LiSendKeyboardEvent(KEY_A, b"\x04", b"\x00")
        rc["mouse_down"] = lib.LiSendMouseButtonEvent(b"\x07", 1)
        rc["mouse_up"] = lib.LiSendMouseButtonEvent(b"\x08", 1)
        rc["mouse_move"] = lib.LiSendMouseMoveEvent(5, -5)
        rc["pad_a"] = lib.LiSendMultiControllerEvent(0, 1, 0x1000, 0, 0, 0, 0, 0, 0)
        rc["pad_release"] = lib.LiSendMultiControllerEvent(0, 1, 0, 0, 0, 0, 0, 0, 0)
        return rc

    def send_seat_sequence(self, go: Path, timeout: float) -> dict:
        """What tests/src/bin/pf-uml-moonlight.rs reads back from the seat's evdev nodes: an Xbox
        controller arrives as controller 0 (as Moonlight announces a pad), then, once the test
        created `go` (its readers are on the new seat's nodes), key A, a relative move, a left
        click, high-resolution wheels, an absolute position, and pad A with the left stick and
        trigger, each pressed and released."""
        lib = self.lib
        rc = {}
        # LI_CTYPE_XBOX, every button, analog triggers + rumble (LI_CCAP_*).
        rc["arrival"] = lib.LiSendControllerArrivalEvent(0, 1, 1, 0xFFFFFFFF, 0x03)
        rc["pad_zero"] = lib.LiSendMultiControllerEvent(0, 1, 0, 0, 0, 0, 0, 0, 0)
        deadline = time.monotonic() + timeout
        while not go.exists():
            if time.monotonic() > deadline:
                rc["go"] = "timeout"
                return rc
            time.sleep(0.05)
        steps = [
            ("key_down", lambda: lib.LiSendKeyboardEvent(KEY_A, b"\x03", b"\x00")),
            ("key_up", lambda: lib.LiSendKeyboardEvent(KEY_A, b"\x04", b"\x00")),
            ("mouse_move", lambda: lib.LiSendMouseMoveEvent(5, -5)),
            ("mouse_down", lambda: lib.LiSendMouseButtonEvent(b"\x07", 1)),
            ("mouse_up", lambda: lib.LiSendMouseButtonEvent(b"\x08", 1)),
            ("scroll", lambda: lib.LiSendHighResScrollEvent(60)),
            ("hscroll", lambda: lib.LiSendHighResHScrollEvent(-120)),
            ("position", lambda: lib.LiSendMousePositionEvent(640, 360, 1280, 720)),
            ("pad_a", lambda: lib.LiSendMultiControllerEvent(0, 1, 0x1000, 200, 0,
                                                              1000, -1000, 0, 0)),
            ("pad_release", lambda: lib.LiSendMultiControllerEvent(0, 1, 0, 0, 0, 0, 0, 0, 0)),
        ]
        for name, send in steps:
            rc[name] = send()
            # The client library batches mouse and pad state; spaced out, every step is sent.
            time.sleep(0.05)
        return rc


def audio_loop(session: StreamingSession, stop: threading.Event, out: dict) -> None:
    config = session.wait_for_opus_config(timeout=10.0)
    out["opus_channels"] = config.channel_count
    decoder = AudioDecoder(sample_rate=config.sample_rate, channels=config.channel_count,
                           streams=config.streams, coupled_streams=config.coupled_streams,
                           mapping=config.mapping)
    while not stop.is_set():
        pkt = session.pull_audio_packet(timeout=0.2)
        if pkt is None:
            continue
        out["audio_packets"] += 1
        try:
            pcm = decoder.decode(pkt.opus_data)
        except Exception:
            out["audio_decode_errors"] += 1
            continue
        if pcm is not None and len(pcm) > 0:
            out["audio_decoded"] += 1
            out["audio_samples"] += int(len(pcm))


def cmd_stream(args) -> dict:
    client = MoonlightClient(config_dir=args.config)
    server = server_info(args, client._identity)
    if not server.server_cert_pem:
        raise RuntimeError("not paired: no server.pem in the config dir (run `pair` first)")
    client._server = server
    client._http = NvHTTP(args.host, client._identity, http_port=args.port,
                          https_port=server.https_port, server_cert_pem=server.server_cert_pem)
    report: dict = {"ok": False, "frames": [], "counters": [], "audio_packets": 0,
                    "audio_decoded": 0, "audio_decode_errors": 0, "audio_samples": 0,
                    "decode_errors": 0, "frame_types": []}
    t0 = time.monotonic()
    session, _ = client._setup_stream(args.app, args.width, args.height, args.fps,
                                      args.bitrate, args.codec, record_audio=True)
    report["connected_s"] = time.monotonic() - t0
    decoder = Decoder(codec=args.codec)
    stop = threading.Event()
    audio = threading.Thread(target=audio_loop, args=(session, stop, report), daemon=True)
    audio.start()
    # pull_frame blocks in the C library; a timer wakes it once the deadline passes.
    deadline = time.monotonic() + args.timeout
    waker = threading.Timer(args.timeout, session.wake)
    waker.daemon = True
    waker.start()
    inputs = InputLib() if args.input else None
    if args.frames == 0:
        # Control-stream-only run: the connection is up once LiStartConnection returned.
        if inputs is not None and args.seat_go:
            report["input_rc"] = inputs.send_seat_sequence(Path(args.seat_go), args.timeout)
        elif inputs is not None:
            report["input_rc"] = inputs.send_all()
        time.sleep(args.settle)
    sizes = set()
    while len(report["frames"]) < args.frames and time.monotonic() < deadline:
        raw = session.pull_frame()
        if raw is None:
            if session.is_terminated:
                break
            continue
        if "first_au_s" not in report:
            # The first access unit the client library reassembled (before decoding).
            report["first_au_s"] = time.monotonic() - t0
        pictures = decoder.decode(raw.annex_b_data)
        if not pictures:
            report["decode_errors"] += 1
        for pic in pictures:
            if "first_frame_s" not in report:
                report["first_frame_s"] = time.monotonic() - t0
                if inputs is not None:
                    report["input_rc"] = inputs.send_all()
            sizes.add(f"{pic.shape[1]}x{pic.shape[0]}")
            report["frames"].append(raw.frame_number)
            report["frame_types"].append(raw.frame_type)
            report["counters"].append(read_counter(pic))
    waker.cancel()
    report["sizes"] = sorted(sizes)
    report["terminated_early"] = session.is_terminated
    report["termination_error"] = session.termination_error
    if args.quit:
        try:
            client._http.quit_app()
            report["quit"] = True
        except Exception as e:
            report["quit"] = False
            report["quit_error"] = str(e)
    stop.set()
    audio.join(timeout=3)
    report["audio_loss"] = dict(session.audio_loss_stats)
    session.stop()
    report["ok"] = True
    return report


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the host's HTTP port")
    p.add_argument("--config", required=True, help="the client identity directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("pair")
    sp.add_argument("--pin", required=True)
    sh = sub.add_parser("https")
    sh.add_argument("verb")
    sh.add_argument("query", nargs="?")
    ss = sub.add_parser("stream")
    ss.add_argument("--app", default="Desktop")
    ss.add_argument("--width", type=int, default=1280)
    ss.add_argument("--height", type=int, default=720)
    ss.add_argument("--fps", type=int, default=60)
    ss.add_argument("--bitrate", type=int, default=10000)
    ss.add_argument("--codec", choices=sorted(CODEC_MAP), default="h264")
    ss.add_argument("--frames", type=int, default=300)
    ss.add_argument("--timeout", type=float, default=30.0)
    ss.add_argument("--input", action="store_true")
    ss.add_argument("--settle", type=float, default=1.0,
                    help="with --frames 0: seconds to stay connected after sending input")
    ss.add_argument("--seat-go", default="",
                    help="with --input --frames 0: announce pad 0, wait for this file, then "
                         "send the seat sequence (see InputLib.send_seat_sequence)")
    ss.add_argument("--quit", action="store_true")
    args = p.parse_args()
    try:
        report = {"pair": cmd_pair, "https": cmd_https, "stream": cmd_stream}[args.cmd](args)
    except BaseException as e:  # the report says what failed; the test decides
        report = failure(e)
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
