#!/usr/bin/env python3
"""An outboard child of warden in Python, with only the standard library.

It speaks the protocol of docs/api.md ("Outboard IPC protocol"): it reads the config file
named by $WARDEN_OUTBOARD_CONFIG, connects to its socket, says hello with the token and
its app version, says ready, answers every ping with a pong of the same number, answers
every call with {"echo": <the request>, "lang": "python"}, reconnects if warden goes
away, and exits 0 when warden asks it to stop.

    [[outboard]]
    name = "py"
    command = ["python3", "examples/outboard_child.py"]
    ready = { ipc = true }

Frames: a u32 big-endian length, then MessagePack (maps with field names). The small
MessagePack codec below covers what the protocol carries: maps, arrays, strings, binary,
integers, floats, booleans and nil.
"""
import json
import os
import socket
import struct
import sys
import time

APP_VERSION = 1
PROTOCOL = 1
MAX_FRAME = 1 << 20


# --------------------------------------------------------------------------- MessagePack
def pack(value):
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 0x80:
            return struct.pack("B", value)
        if -32 <= value < 0:
            return struct.pack("b", value)
        if 0 <= value < 1 << 64:
            return b"\xcf" + struct.pack(">Q", value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode()
        if len(data) < 32:
            return struct.pack("B", 0xA0 | len(data)) + data
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(value, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(value)) + bytes(value)
    if isinstance(value, (list, tuple)):
        return b"\xdd" + struct.pack(">I", len(value)) + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        return b"\xdf" + struct.pack(">I", len(value)) + b"".join(
            pack(k) + pack(v) for k, v in value.items())
    raise TypeError("cannot pack %r" % type(value))


def unpack(data):
    value, end = _unpack(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes in a frame")
    return value


def _unpack(data, at):
    byte = data[at]
    at += 1
    if byte < 0x80:
        return byte, at
    if byte >= 0xE0:
        return byte - 0x100, at
    if 0x80 <= byte <= 0x8F:
        return _map(data, at, byte & 0x0F)
    if 0x90 <= byte <= 0x9F:
        return _array(data, at, byte & 0x0F)
    if 0xA0 <= byte <= 0xBF:
        n = byte & 0x1F
        return data[at:at + n].decode(), at + n
    fixed = {
        0xC0: (0, lambda b: None), 0xC2: (0, lambda b: False), 0xC3: (0, lambda b: True),
        0xCA: (4, lambda b: struct.unpack(">f", b)[0]),
        0xCB: (8, lambda b: struct.unpack(">d", b)[0]),
        0xCC: (1, lambda b: b[0]), 0xCD: (2, lambda b: struct.unpack(">H", b)[0]),
        0xCE: (4, lambda b: struct.unpack(">I", b)[0]),
        0xCF: (8, lambda b: struct.unpack(">Q", b)[0]),
        0xD0: (1, lambda b: struct.unpack(">b", b)[0]),
        0xD1: (2, lambda b: struct.unpack(">h", b)[0]),
        0xD2: (4, lambda b: struct.unpack(">i", b)[0]),
        0xD3: (8, lambda b: struct.unpack(">q", b)[0]),
    }
    if byte in fixed:
        size, read = fixed[byte]
        return read(data[at:at + size]), at + size
    lengths = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4,
               0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}
    if byte in lengths:
        size = lengths[byte]
        n = int.from_bytes(data[at:at + size], "big")
        at += size
        if byte in (0xC4, 0xC5, 0xC6):
            return bytes(data[at:at + n]), at + n
        if byte in (0xD9, 0xDA, 0xDB):
            return data[at:at + n].decode(), at + n
        if byte in (0xDC, 0xDD):
            return _array(data, at, n)
        return _map(data, at, n)
    raise ValueError("unsupported MessagePack byte 0x%02x" % byte)


def _array(data, at, n):
    out = []
    for _ in range(n):
        value, at = _unpack(data, at)
        out.append(value)
    return out, at


def _map(data, at, n):
    out = {}
    for _ in range(n):
        key, at = _unpack(data, at)
        value, at = _unpack(data, at)
        out[key] = value
    return out, at


# --------------------------------------------------------------------------- frames
def send(sock, message):
    payload = pack(message)
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _exactly(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(sock):
    """The next message, or None when warden closed the connection."""
    header = _exactly(sock, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ValueError("frame of %d bytes is over the maximum" % length)
    payload = _exactly(sock, length)
    return None if payload is None else unpack(payload)


# --------------------------------------------------------------------------- the child
def read_config():
    path = os.environ.get("WARDEN_OUTBOARD_CONFIG")
    if not path:
        sys.exit("$WARDEN_OUTBOARD_CONFIG is not set: start me as an [[outboard]] child of warden")
    with open(path) as f:
        config = json.load(f)
    if not os.path.isabs(config["socket"]):
        config["socket"] = os.path.join(os.path.dirname(path), config["socket"])
    return config


def connect():
    """Connects and says hello; the connected socket, welcomed."""
    config = read_config()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(config["socket"])
    send(sock, {"type": "hello", "protocol": PROTOCOL, "token": config["token"],
                "app_version": APP_VERSION, "pid": os.getpid()})
    answer = receive(sock)
    if not answer or answer.get("type") != "welcome":
        sys.exit("refused by warden: %r" % (answer,))
    return sock


def handle(request):
    return {"echo": request, "lang": "python"}


def serve():
    sock = connect()
    send(sock, {"type": "ready"})
    while True:
        try:
            message = receive(sock)
        except OSError:
            message = None
        if message is None:
            # warden went away (a restart, a reexec): reconnect with the same token
            sock = reconnect()
            send(sock, {"type": "ready"})
            continue
        kind = message.get("type")
        if kind == "ping":
            send(sock, {"type": "pong", "seq": message["seq"]})
        elif kind == "call":
            try:
                result = {"Ok": handle(message["body"])}
            except Exception as e:  # noqa: BLE001 - the handler's error goes to the caller
                result = {"Err": str(e)}
            send(sock, {"type": "reply", "id": message["id"], "result": result})
        elif kind == "stop":
            return 0
        elif kind == "error":
            sys.exit("warden: %s" % message.get("message"))


def reconnect(within=60.0):
    deadline = time.monotonic() + within
    while True:
        try:
            return connect()
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("lost warden and could not reconnect within %.0f s" % within)
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(serve())
