"""HPACK for the HTTP/2 server (emulator.transport.h2hpack): the decoder against RFC 7541's
examples (Appendix C.3 and C.4), against the hpack library's encoder over many blocks (indexing,
Huffman, never-indexed fields, table size updates and eviction), and every refusal; the encoder
read back by the hpack library's decoder."""

from __future__ import annotations

import random

import hpack
import pytest

from emulator.transport import h2hpack
from emulator.transport.h2hpack import Decoder, HeaderBlockError, HeaderListTooLarge

Fields = list[tuple[bytes, bytes]]

EXAMPLE_FIELDS: list[Fields] = [
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
# RFC 7541 C.3 (no Huffman coding) and C.4 (Huffman): three requests on one connection.
PLAIN_BLOCKS = [
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
]
HUFFMAN_BLOCKS = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
]


@pytest.mark.parametrize("blocks", [PLAIN_BLOCKS, HUFFMAN_BLOCKS], ids=["plain", "huffman"])
def test_the_rfc_examples_decode(blocks: list[str]) -> None:
    decoder = Decoder(max_list_size=64 * 1024)
    for block, expected in zip(blocks, EXAMPLE_FIELDS, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == expected


def random_fields(rng: random.Random) -> Fields:
    names = [b"content-type", b"x-request-id", b"authorization", b"user-agent", b"x-long"]
    fields: Fields = [(b":method", rng.choice([b"GET", b"POST", b"PATCH"])), (b":path", b"/")]
    for _ in range(rng.randrange(0, 8)):
        size = rng.choice([0, 3, 40, 126, 127, 128, 300, 2000])
        value = bytes(rng.randrange(32, 127) for _ in range(size))
        fields.append((rng.choice(names), value))
    return fields


@pytest.mark.parametrize("huffman", [True, False])
def test_blocks_of_the_hpack_encoder_decode_to_what_it_was_given(huffman: bool) -> None:
    rng = random.Random(7)
    encoder = hpack.Encoder()
    decoder = Decoder(max_list_size=1024 * 1024)
    for round_ in range(400):
        if round_ == 150:
            # A smaller table: the encoder sends a size update, entries are evicted.
            encoder.header_table_size = 256
        if round_ == 300:
            encoder.header_table_size = 4096
        fields = random_fields(rng)
        sensitive = [
            hpack.NeverIndexedHeaderTuple(name, value) if rng.random() < 0.2 else (name, value)
            for name, value in fields
        ]
        block = encoder.encode(sensitive, huffman=huffman)
        assert decoder.decode(block) == fields


def decode_one(block: bytes, *, max_list_size: int = 64 * 1024) -> Fields:
    return Decoder(max_list_size=max_list_size).decode(block)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\x80", id="index 0"),
        pytest.param(b"\xbe", id="an empty dynamic table's first entry"),
        pytest.param(b"\xff\x80", id="an integer cut short"),
        pytest.param(b"\xff" + b"\xff" * 5 + b"\x01", id="an integer too large"),
        pytest.param(b"\x00", id="a literal without its name"),
        pytest.param(b"\x00\x01a", id="a literal without its value"),
        pytest.param(b"\x00\x05ab", id="a string cut short"),
        pytest.param(b"\x00\x84\xff\xff\xff\xff\x00", id="a Huffman string holding EOS"),
        pytest.param(b"\x3f\xe2\x1f", id="a table size of 4097 over the advertised 4096"),
        pytest.param(b"\x82\x20", id="a table size update after a field"),
    ],
)
def test_a_bad_block_is_refused(block: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        decode_one(block)


def test_a_header_list_over_the_limit_is_refused_counting_32_bytes_a_field() -> None:
    fields = [(b"x-a", b"v" * 29)]  # 3 + 29 + 32 = 64 bytes
    block = h2hpack.encode(fields * 4)
    assert decode_one(block, max_list_size=256) == fields * 4
    with pytest.raises(HeaderListTooLarge):
        decode_one(block, max_list_size=255)


def test_an_entry_larger_than_the_table_empties_it() -> None:
    encoder = hpack.Encoder()
    decoder = Decoder(max_list_size=64 * 1024, max_table_size=100)
    encoder.header_table_size = 100
    decoder.decode(encoder.encode([(b"x-small", b"1")]))
    # The encoder indexes the big field too; both sides then hold an empty table.
    decoder.decode(encoder.encode([(b"x-big", b"b" * 200)]))
    with pytest.raises(HeaderBlockError):
        decoder.decode(b"\xbe")


def test_the_encoder_is_read_back_by_the_hpack_library() -> None:
    fields: Fields = [
        (b":status", b"200"),
        (b"content-type", b"application/json"),
        (b"x-custom", b"a" * 300),
        (b"date", b"Sat, 05 Dec 2026 17:00:00 GMT"),
        (b"content-length", b"0"),
    ]
    for status in (b"200", b"204", b"404", b"418", b"503"):
        fields[0] = (b":status", status)
        block = h2hpack.encode(fields)
        assert hpack.Decoder().decode(block, raw=True) == fields
        assert decode_one(block) == fields


def test_the_encoder_uses_the_static_table_and_no_huffman() -> None:
    block = h2hpack.encode([(b":status", b"200"), (b"content-type", b"text/plain")])
    # :status 200 is static entry 8; content-type is entry 31, literal without indexing.
    assert block == b"\x88" + b"\x0f\x10" + b"\x0atext/plain"
