"""HPACK (RFC 7541) for the emulator's HTTP/2 server: request header blocks decoded, response
header blocks encoded.

Owns the decoder's dynamic table and its bounds, and the encoder's choice. Decoding is the
emulator's own (the hpack library's decoder, with its debug logging and a tuple subclass per
field, was about 15 % of an h2c job's CPU); Huffman-coded strings are decoded by the hpack
library's table. Bounds: a header list larger than `max_list_size` (each field counting its
name, value and 32 bytes, as SETTINGS_MAX_HEADER_LIST_SIZE does) is refused, the dynamic table
never exceeds the size the server advertised (4,096 bytes, the protocol's default), and an
integer may not run past 2^28.

Encoding writes literal fields without indexing and without Huffman coding, names from the
static table where it has them: the server keeps no encoder table, and a client spends no
Huffman decoding on a response head.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman

Fields = list[tuple[bytes, bytes]]

# RFC 7541 Appendix A: the static table, index 1 to 61.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    *(
        (name, b"")
        for name in (
            b"accept-language accept-ranges accept access-control-allow-origin age allow "
            b"authorization cache-control content-disposition content-encoding "
            b"content-language content-length content-location content-range content-type "
            b"cookie date etag expect expires from host if-match if-modified-since "
            b"if-none-match if-range if-unmodified-since last-modified link location "
            b"max-forwards proxy-authenticate proxy-authorization range referer refresh "
            b"retry-after server set-cookie strict-transport-security transfer-encoding "
            b"user-agent vary via www-authenticate"
        ).split()
    ),
)
STATIC_SIZE = len(STATIC_TABLE)
# What a table entry or a header list field costs besides its name and value.
ENTRY_OVERHEAD = 32
DEFAULT_TABLE_SIZE = 4096
# An integer whose continuation bytes run past this many bits is refused.
INTEGER_BITS = 28


class HeaderBlockError(Exception):
    """A header block that cannot be decoded (COMPRESSION_ERROR)."""


class HeaderListTooLarge(HeaderBlockError):
    """A header list beyond the advertised SETTINGS_MAX_HEADER_LIST_SIZE."""


def _integer(data: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """An integer (RFC 7541 section 5.1) at `position`, and where what follows begins."""
    mask = (1 << prefix_bits) - 1
    value = data[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    end = len(data)
    while True:
        if position >= end:
            raise HeaderBlockError("an integer cut short")
        byte = data[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift >= INTEGER_BITS:
            raise HeaderBlockError("an integer too large")


def _string(data: bytes, position: int) -> tuple[bytes, int]:
    """A string literal (RFC 7541 section 5.2) and where what follows begins."""
    if position >= len(data):
        raise HeaderBlockError("a field cut short")
    huffman = data[position] & 0x80
    length, position = _integer(data, position, 7)
    stop = position + length
    if stop > len(data):
        raise HeaderBlockError("a string cut short")
    raw = data[position:stop]
    if huffman:
        try:
            raw = decode_huffman(raw)
        except HPACKDecodingError as error:
            raise HeaderBlockError(f"bad Huffman code: {error}") from None
    return raw, stop


class Decoder:
    """One connection's decoding context (its dynamic table)."""

    def __init__(self, *, max_list_size: int, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._max_list_size = max_list_size
        # The size the server advertised, and the size the client has chosen within it.
        self._allowed_table_size = max_table_size
        self._table_limit = max_table_size
        self._table: deque[tuple[bytes, bytes]] = deque()
        self._table_size = 0

    def decode(self, block: bytes) -> Fields:
        """The fields of one whole header block. Raises `HeaderBlockError`."""
        fields: Fields = []
        position = 0
        end = len(block)
        list_size = 0
        while position < end:
            first = block[position]
            if first & 0x80:
                # Indexed field.
                index, position = _integer(block, position, 7)
                field = self._entry(index)
            elif first & 0x20 and not first & 0x40:
                # Dynamic table size update: only before the first field.
                if fields:
                    raise HeaderBlockError("a table size update after a field")
                size, position = _integer(block, position, 5)
                if size > self._allowed_table_size:
                    raise HeaderBlockError(f"a table size of {size} beyond the advertised one")
                self._table_limit = size
                self._evict()
                continue
            else:
                # Literal: with incremental indexing (01), or without or never indexed (000).
                indexing = bool(first & 0x40)
                index, position = _integer(block, position, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, position = _string(block, position)
                value, position = _string(block, position)
                field = (name, value)
                if indexing:
                    self._add(field)
            list_size += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if list_size > self._max_list_size:
                raise HeaderListTooLarge(f"a header list of more than {self._max_list_size} bytes")
            fields.append(field)
        return fields

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= STATIC_SIZE:
            return STATIC_TABLE[index - 1]
        dynamic = index - STATIC_SIZE - 1
        if index <= 0 or dynamic >= len(self._table):
            raise HeaderBlockError(f"no table entry {index}")
        return self._table[dynamic]

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._table_limit:
            # An entry larger than the table empties it (RFC 7541 section 4.4).
            self._table.clear()
            self._table_size = 0
            return
        self._table.appendleft(field)
        self._table_size += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._table_size > self._table_limit:
            name, value = table.pop()
            self._table_size -= len(name) + len(value) + ENTRY_OVERHEAD


# Encoding -----------------------------------------------------------------------------------

_STATUS_INDEX = {
    value: index for index, (name, value) in enumerate(STATIC_TABLE, 1) if name == b":status"
}
_NAME_INDEX: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(STATIC_TABLE, 1):
    _NAME_INDEX.setdefault(_name, _index)
# How each name is introduced, filled as names are met, up to a bound (names come from the
# app, not from the client).
_NAME_PREFIX: dict[bytes, bytes] = {}
_NAME_PREFIX_LIMIT = 4096
_SHORT_LENGTHS = tuple(bytes((n,)) for n in range(127))


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An integer (RFC 7541 section 5.1), `first` holding the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _name_prefix(name: bytes) -> bytes:
    prefix = _NAME_PREFIX.get(name)
    if prefix is None:
        index = _NAME_INDEX.get(name)
        if index is not None:
            # Literal without indexing, indexed name (RFC 7541 section 6.2.2).
            prefix = encode_integer(index, 4)
        else:
            prefix = b"\x00" + encode_integer(len(name), 7) + name
        if len(_NAME_PREFIX) < _NAME_PREFIX_LIMIT:
            _NAME_PREFIX[name] = prefix
    return prefix


def table_size_update(size: int) -> bytes:
    """A dynamic table size update (RFC 7541 section 6.3), to begin a header block."""
    return encode_integer(size, 5, 0x20)


def encode(fields: Fields) -> bytes:
    """A header block of literal fields without indexing and without Huffman coding (a
    `:status` the static table has is indexed)."""
    out = bytearray()
    for name, value in fields:
        if name == b":status":
            index = _STATUS_INDEX.get(value)
            if index is not None:
                out.append(0x80 | index)
                continue
        out += _name_prefix(name)
        size = len(value)
        out += _SHORT_LENGTHS[size] if size < 127 else encode_integer(size, 7)
        out += value
    return bytes(out)
