import math
import struct
import unittest

from trainyard import _wire


def bits(x):
    return struct.pack("<d", x)


class BinaryFormatTest(unittest.TestCase):
    def test_layout_of_one_point_with_steps_and_timestamps(self):
        body = _wire.encode_metrics([("a", [0.5], [7], [1000])])
        expected = (b"TYM1" + struct.pack("<I", 1) + struct.pack("<H", 1) + b"a" +
                    struct.pack("<IB", 1, 3) + struct.pack("<d", 0.5) +
                    struct.pack("<q", 7) + struct.pack("<q", 1000))
        self.assertEqual(body, expected)

    def test_flags_follow_what_is_present(self):
        body = _wire.encode_metrics([("a", [1.0, 2.0], None, [1, 2])])
        self.assertEqual(body[4 + 4 + 2 + 1 + 4], _wire.FLAG_TIMESTAMPS)
        body = _wire.encode_metrics([("a", [1.0], None, None)])
        self.assertEqual(body[4 + 4 + 2 + 1 + 4], 0)
        self.assertEqual(len(body), 4 + 4 + 2 + 1 + 5 + 8)
        body = _wire.encode_metrics([("a", [1.0], [3], None)])
        self.assertEqual(body[4 + 4 + 2 + 1 + 4], _wire.FLAG_STEPS)

    def test_round_trip_keeps_non_finite_values_bit_for_bit(self):
        payload_nan = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
        values = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, 5e-324, payload_nan, -1.5]
        steps = [0, -1, 2 ** 63 - 1, -2 ** 63, 4, 5, 6, 7, 8]
        ts = [1732600000000 + i for i in range(len(values))]
        series = [("loss", values, steps, ts), ("ünï/cödé", [1.0, 2.0], None, [5, 6]),
                  ("x" * 250, [3.0], None, None)]
        decoded = _wire.decode_metrics(_wire.encode_metrics(series))
        self.assertEqual(len(decoded), 3)
        name, v, s, t = decoded[0]
        self.assertEqual(name, "loss")
        self.assertEqual([bits(x) for x in v], [bits(x) for x in values])
        self.assertEqual(s, steps)
        self.assertEqual(t, ts)
        self.assertEqual(decoded[1], ("ünï/cödé", [1.0, 2.0], None, [5, 6]))
        self.assertEqual(decoded[2], ("x" * 250, [3.0], None, None))

    def test_encode_rejects_bad_series(self):
        with self.assertRaises(ValueError):
            _wire.encode_metrics([("", [1.0], None, None)])
        with self.assertRaises(ValueError):
            _wire.encode_metrics([("é" * 126, [1.0], None, None)])  # 252 bytes
        with self.assertRaises(ValueError):
            _wire.encode_metrics([("a", [1.0, 2.0], [1], None)])
        with self.assertRaises(ValueError):
            _wire.encode_metrics([("a", [], None, None)])

    def test_decode_names_the_problem(self):
        good = _wire.encode_metrics([("a", [1.0], None, [1]), ("acc", [1.0, 2.0], [1, 2], None)])
        cases = [
            (b"TYM2" + good[4:], "magic"),
            (good[:-3], 'series 1 ("acc"): body ends inside steps'),
            (good + b"\0", "1 bytes after the last series"),
            (b"TYM1" + struct.pack("<IH", 1, 0), "series 0: name length 0"),
            (b"TYM1" + struct.pack("<IH", 1, 1) + b"a" + struct.pack("<IB", 0, 0),
             'series 0 ("a"): point count is 0'),
            (b"TYM1" + struct.pack("<IH", 1, 1) + b"a" + struct.pack("<IB", 1, 4) + bits(1.0),
             "unknown flag bits"),
            (b"TYM1" + struct.pack("<IH", 1, 2) + b"\xff\xfe", "not valid UTF-8"),
        ]
        for body, message in cases:
            with self.assertRaises(_wire.DecodeError) as cm:
                _wire.decode_metrics(body)
            self.assertIn(message, str(cm.exception))


class JsonNumbersTest(unittest.TestCase):
    def test_non_finite_numbers_are_strings(self):
        self.assertEqual([_wire.json_number(x) for x in (math.nan, math.inf, -math.inf, 1.5)],
                         ["NaN", "Infinity", "-Infinity", 1.5])
        back = [_wire.number_from_json(x) for x in ("NaN", "Infinity", "-Infinity", 2)]
        self.assertTrue(math.isnan(back[0]))
        self.assertEqual(back[1:], [math.inf, -math.inf, 2.0])
        for bad in ("nan", True, None, [1]):
            with self.assertRaises(ValueError):
                _wire.number_from_json(bad)


if __name__ == "__main__":
    unittest.main()
