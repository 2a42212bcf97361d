"""The binary metrics body of docs/tracking.md and the JSON conventions for numbers.

Binary body (all integers little-endian)::

    "TYM1"  u32 series_count
    per series: u16 name_length, name (UTF-8), u32 n, u8 flags,
                f64 values[n], i64 steps[n] if flags bit 0, i64 timestamps[n] if flags bit 1

Used by the client (encode) and by the test twin (decode).
"""

import math
import struct
import sys
from array import array

MAGIC = b"TYM1"
CONTENT_TYPE = "application/x-trainyard-metrics"
FLAG_STEPS = 1
FLAG_TIMESTAMPS = 2
MAX_NAME_BYTES = 250

_BIG_ENDIAN = sys.byteorder == "big"
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SERIES_HEAD = struct.Struct("<IB")


class DecodeError(ValueError):
    """A malformed binary body; the message names the series and, where known, the point."""


def _le_bytes(typecode, values):
    a = array(typecode, values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def encode_metrics(series):
    """Encodes series as one binary body.

    series: iterable of (name, values, steps, timestamps_ms); steps and timestamps may be
    None (then the flag bit is clear). values are floats (NaN and +-Inf kept bit for bit),
    steps and timestamps ints in the i64 range. Raises ValueError for a bad name or lengths
    that do not match.
    """
    parts = [MAGIC, b""]
    count = 0
    for name, values, steps, timestamps in series:
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= MAX_NAME_BYTES:
            raise ValueError("metric name must be 1..250 UTF-8 bytes: %r" % (name,))
        n = len(values)
        if n < 1:
            raise ValueError("series %r has no points" % (name,))
        flags = 0
        if steps is not None:
            if len(steps) != n:
                raise ValueError("series %r: %d values but %d steps" % (name, n, len(steps)))
            flags |= FLAG_STEPS
        if timestamps is not None:
            if len(timestamps) != n:
                raise ValueError(
                    "series %r: %d values but %d timestamps" % (name, n, len(timestamps)))
            flags |= FLAG_TIMESTAMPS
        parts.append(_U16.pack(len(raw)))
        parts.append(raw)
        parts.append(_SERIES_HEAD.pack(n, flags))
        parts.append(_le_bytes("d", values))
        if steps is not None:
            parts.append(_le_bytes("q", steps))
        if timestamps is not None:
            parts.append(_le_bytes("q", timestamps))
        count += 1
    parts[1] = _U32.pack(count)
    return b"".join(parts)


def decode_metrics(body):
    """Decodes a binary body strictly.

    Returns a list of (name, values, steps, timestamps) with lists (steps/timestamps None when
    absent). Raises DecodeError naming the series for anything malformed, including trailing
    bytes.
    """
    mv = memoryview(body)
    size = len(mv)
    if size < 8 or bytes(mv[:4]) != MAGIC:
        raise DecodeError('body does not start with the magic "TYM1"')
    (count,) = _U32.unpack_from(mv, 4)
    pos = 8
    out = []
    for i in range(count):
        label = "series %d" % i

        def need(nbytes, what):
            if pos + nbytes > size:
                raise DecodeError("%s: body ends inside %s" % (label, what))

        need(2, "the name length")
        (name_len,) = _U16.unpack_from(mv, pos)
        pos += 2
        if not 1 <= name_len <= MAX_NAME_BYTES:
            raise DecodeError("%s: name length %d is not in 1..250" % (label, name_len))
        need(name_len, "the name")
        try:
            name = bytes(mv[pos:pos + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("%s: name is not valid UTF-8" % label) from None
        pos += name_len
        label = '%s ("%s")' % (label, name)
        need(5, "the point count and flags")
        n, flags = _SERIES_HEAD.unpack_from(mv, pos)
        pos += 5
        if n < 1:
            raise DecodeError("%s: point count is 0" % label)
        if flags & ~(FLAG_STEPS | FLAG_TIMESTAMPS):
            raise DecodeError("%s: unknown flag bits 0x%02x" % (label, flags))
        arrays = []
        for typecode, present, what in (("d", True, "values"),
                                        ("q", flags & FLAG_STEPS, "steps"),
                                        ("q", flags & FLAG_TIMESTAMPS, "timestamps")):
            if not present:
                arrays.append(None)
                continue
            need(8 * n, "%s (%d points declared)" % (what, n))
            a = array(typecode)
            a.frombytes(mv[pos:pos + 8 * n])
            if _BIG_ENDIAN:
                a.byteswap()
            arrays.append(a.tolist())
            pos += 8 * n
        out.append((name, arrays[0], arrays[1], arrays[2]))
    if pos != size:
        raise DecodeError("%d bytes after the last series" % (size - pos))
    return out


# JSON: numbers that are not finite are the strings "NaN", "Infinity", "-Infinity".

def json_number(v):
    """A float as JSON wants it in the protocol: itself when finite, else a string."""
    if v != v:
        return "NaN"
    if v == math.inf:
        return "Infinity"
    if v == -math.inf:
        return "-Infinity"
    return v


_FROM_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def number_from_json(v):
    """The inverse of json_number; raises ValueError for anything that is not a number."""
    if isinstance(v, bool):
        raise ValueError("not a number: %r" % (v,))
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v in _FROM_JSON:
        return _FROM_JSON[v]
    raise ValueError("not a number: %r" % (v,))
