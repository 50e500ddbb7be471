"""The two helloworld messages, by hand, for grpc_client.py and grpc_server.py.

`message HelloRequest { string name = 1; }` and `message HelloReply { string message = 1; }`
have the same wire form: field 1, length-delimited (tag byte 0x0a), a varint length, the
UTF-8 bytes. No generated code and no protobuf package: grpcio passes raw bytes when a
method has no serializers.
"""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int):
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def encode(text: str) -> bytes:
    """A message whose field 1 is `text` (an empty string is the empty message)."""
    raw = text.encode()
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def decode(data: bytes) -> str:
    """Field 1 of a message ("" when absent); other fields are skipped."""
    text, at = "", 0
    while at < len(data):
        key, at = _read_varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _read_varint(data, at)
        elif wire == 2:
            n, at = _read_varint(data, at)
            if field == 1:
                text = data[at : at + n].decode()
            at += n
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return text
