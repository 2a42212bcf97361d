"""The SDK's own HTTP/1.1 client (trainyard._http) against a scripted server that sends exact
bytes: framing (Content-Length, chunked, close-delimited), keep-alive reuse and its stale
case, interim answers, malformed answers (each a ProtocolError, never a hang), request bodies
from files, and TLS with the daemon's own certificate."""

import io
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from trainyard import _http

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedServer(object):
    """Serves each accepted connection with the next script: a list of answers (bytes), one
    per request read; after its answers a connection is closed. Records every request."""

    def __init__(self, scripts, tls_context=None):
        self.dir = tempfile.mkdtemp(prefix="ty-http-")
        self.scripts = list(scripts)
        self.requests = []  # (head bytes, body bytes)
        self.accepted = 0
        self.tls = tls_context
        if tls_context is None:
            self.path = os.path.join(self.dir, "s.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.path)
            self.url = "unix://" + self.path
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.url = "https://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _serve(self):
        while self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            script = self.scripts.pop(0)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                reader = conn.makefile("rb")
                for answer in script:
                    if not self._read_request(reader):
                        break
                    if answer is None:  # never answers: the client's timeout decides
                        time.sleep(2)
                        break
                    conn.sendall(answer)
                reader.close()
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def _read_request(self, reader):
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()
            if not line:
                return False
            head += line
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        self.requests.append((head, reader.read(length)))
        return True


class HttpClientTest(unittest.TestCase):
    def serve(self, *scripts, **kw):
        server = ScriptedServer(scripts, **kw)
        self.addCleanup(server.close)
        return server

    def transport(self, server, **kw):
        t = _http.Transport(server.url, "tok", timeout=kw.pop("timeout", 5), **kw)
        self.addCleanup(t.close)
        return t

    def test_content_length_answers_reuse_one_connection(self):
        server = self.serve([OK, b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!"])
        t = self.transport(server)
        self.assertEqual(t.request("GET", "/a"), (200, b"ok"))
        self.assertEqual(t.request("POST", "/b", b"xyz", "text/plain"), (404, b"nope!"))
        self.assertEqual(t.connections_opened, 1)
        first, second = server.requests
        self.assertTrue(first[0].startswith(b"GET /a HTTP/1.1\r\nHost: localhost\r\n"))
        self.assertIn(b"Authorization: Bearer tok\r\n", first[0])
        self.assertNotIn(b"Content-Length", first[0])
        self.assertIn(b"Content-Length: 3\r\n", second[0])
        self.assertIn(b"Content-Type: text/plain\r\n", second[0])
        self.assertEqual(second[1], b"xyz")

    def test_post_without_body_says_length_zero(self):
        server = self.serve([OK])
        self.transport(server).request("POST", "/cancel")
        self.assertIn(b"Content-Length: 0\r\n", server.requests[0][0])

    def test_chunked_with_extensions_and_trailers(self):
        body = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;name=x\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        server = self.serve([body, OK])
        t = self.transport(server)
        self.assertEqual(t.request("GET", "/c"), (200, b"hello" + b"z" * 26))
        self.assertEqual(t.request("GET", "/d"), (200, b"ok"))  # the framing ended exactly
        self.assertEqual(t.connections_opened, 1)

    def test_answers_that_end_the_connection_are_not_reused(self):
        # Each first connection would answer a second request with STALE if it were reused.
        stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE"
        server = self.serve([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n!",
                             stale],
                            [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", stale],
                            [OK])
        t = self.transport(server)
        self.assertEqual(t.request("GET", "/"), (200, b"!"))
        self.assertEqual(t.request("GET", "/"), (200, b"hi"))
        self.assertEqual(t.request("GET", "/"), (200, b"ok"))
        self.assertEqual(t.connections_opened, 3)

    def test_close_delimited_body_reads_to_the_end(self):
        server = self.serve([b"HTTP/1.1 200 OK\r\n\r\nuntil the end"])
        self.assertEqual(self.transport(server).request("GET", "/"), (200, b"until the end"))

    def test_http10_keep_alive_is_reused(self):
        server = self.serve([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                             b"Content-Length: 2\r\n\r\nhi", OK])
        t = self.transport(server)
        t.request("GET", "/")
        self.assertEqual(t.request("GET", "/"), (200, b"ok"))
        self.assertEqual(t.connections_opened, 1)

    def test_interim_answer_is_skipped_and_204_has_no_body(self):
        server = self.serve([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                             b"Content-Length: 3\r\n\r\nnew",
                             b"HTTP/1.1 204 No Content\r\n\r\n", OK])
        t = self.transport(server)
        self.assertEqual(t.request("PUT", "/x", b"1"), (201, b"new"))
        self.assertEqual(t.request("DELETE", "/x"), (204, b""))
        self.assertEqual(t.request("GET", "/x"), (200, b"ok"))
        self.assertEqual(t.connections_opened, 1)

    def test_stale_keep_alive_connection_is_retried_once_on_a_new_one(self):
        # The first connection answers once and is then closed by the server without notice.
        server = self.serve([OK], [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"])
        t = self.transport(server)
        self.assertEqual(t.request("GET", "/"), (200, b"ok"))
        self.assertEqual(t.request("GET", "/"), (200, b"fresh"))
        self.assertEqual(t.connections_opened, 2)

    def test_malformed_answers_raise_protocol_errors(self):
        cases = {
            "not http": b"SSH-2.0-OpenSSH\r\n\r\n",
            "status not 3 digits": b"HTTP/1.1 20 OK\r\n\r\n",
            "body cut short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "non-ascii digit length": "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n"
                                      .encode("latin-1"),
            "conflicting lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 3\r\n\r\nokk",
            "chunk size 0x": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"0x2\r\nok\r\n0\r\n\r\n",
            "chunk size underscore": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"1_0\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n",
            "chunk size negative": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            "chunk without its CRLF": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      b"2\r\nokXX0\r\n\r\n",
            "unknown encoding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "header without colon": b"HTTP/1.1 200 OK\r\nBroken\r\n\r\n",
            "too many headers": b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 200 + b"\r\n",
            "line too long": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
            "closed in the head": b"HTTP/1.1 200 OK\r\nContent-Le",
            "nothing at all": b"",
        }
        server = self.serve(*[[answer] for answer in cases.values()])
        t = self.transport(server)
        for what in cases:
            with self.subTest(what):
                with self.assertRaises(_http.ProtocolError):
                    t.request("GET", "/")
                self.assertIsInstance(_http.ProtocolError("x"), _http.CONNECTION_ERRORS)

    def test_file_body_is_sent_in_blocks_and_a_shrunk_file_fails_fast(self):
        data = os.urandom(3 * _http.SEND_BLOCK_BYTES + 17)

        class Body(object):
            def __init__(self, raw, size):
                self.f, self.size = io.BytesIO(raw), size

            def __len__(self):
                return self.size

            def read(self, n=-1):
                return self.f.read(n)

            def seek(self, pos):
                self.f.seek(pos)

        server = self.serve([OK])
        t = self.transport(server)
        self.assertEqual(t.request("PUT", "/f", Body(data, len(data))), (200, b"ok"))
        self.assertEqual(server.requests[0][1], data)
        with self.assertRaises(_http.ProtocolError) as caught:
            t.request("PUT", "/f", Body(b"abc", 10))
        self.assertIn("7 bytes before its declared length of 10", str(caught.exception))

    def test_sink_takes_2xx_bodies_block_by_block_and_errors_stay_in_memory(self):
        big = os.urandom(2 * _http.SEND_BLOCK_BYTES + 5)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                           for p in (big[:100000], big[100000:]))
        server = self.serve([
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\ngone"])
        t = self.transport(server)

        class Sink(object):
            def __init__(self):
                self.blocks = []

            def write(self, block):
                self.blocks.append(block)

        for _ in range(2):
            sink = Sink()
            self.assertEqual(t.request("GET", "/f", sink=sink), (200, b""))
            self.assertEqual(b"".join(sink.blocks), big)
            self.assertGreater(len(sink.blocks), 1)
            self.assertLessEqual(max(map(len, sink.blocks)), _http.SEND_BLOCK_BYTES)
        sink = Sink()
        self.assertEqual(t.request("GET", "/f", sink=sink), (404, b"gone"))
        self.assertEqual(sink.blocks, [])

    def test_an_answer_cut_after_reaching_the_sink_is_not_retried(self):
        # On a reused connection, a stale-connection retry would write the body twice.
        cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!"
        server = self.serve([OK, cut], [OK])
        t = self.transport(server)
        t.request("GET", "/")
        out = io.BytesIO()
        with self.assertRaises(_http.ProtocolError):
            t.request("GET", "/f", sink=out)
        self.assertEqual(out.getvalue(), b"half!")
        self.assertEqual(t.connections_opened, 1)

    def test_a_connection_closed_under_a_request_resends_only_what_may_be_repeated(self):
        # The server reads the second request on the reused connection, then closes it
        # without an answer: the request may or may not have been acted on.
        for method, headers, resent in (("GET", {}, True), ("POST", {}, False),
                                        ("POST", {"Idempotency-Key": "k1"}, True)):
            with self.subTest(method=method, headers=headers):
                server = self.serve([OK, b""], [OK])
                t = self.transport(server)
                t.request("GET", "/warm")
                if resent:
                    self.assertEqual(t.request(method, "/x", b"{}", headers=headers),
                                     (200, b"ok"))
                    self.assertEqual(len(server.requests), 3)
                else:
                    with self.assertRaises(_http.ProtocolError):
                        t.request(method, "/x", b"{}", headers=headers)
                    self.assertEqual(len(server.requests), 2)  # sent once, never again

    def test_a_timeout_is_never_resent(self):
        server = self.serve([OK, None], [OK])
        t = self.transport(server, timeout=0.5)
        t.request("GET", "/warm")
        with self.assertRaises(OSError):
            t.request("GET", "/slow")
        self.assertEqual(len(server.requests), 2)

    def test_an_answer_framed_two_ways_ends_the_connection(self):
        stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE"
        server = self.serve([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Length: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n", stale], [OK])
        t = self.transport(server)
        self.assertEqual(t.request("GET", "/"), (200, b"hi"))
        self.assertEqual(t.request("GET", "/"), (200, b"ok"))

    def test_a_failing_sink_is_its_own_error_and_not_resent(self):
        server = self.serve([OK, OK], [OK])
        t = self.transport(server)

        class Full(object):
            def write(self, block):
                raise OSError(28, "No space left on device")

        t.request("GET", "/warm")
        with self.assertRaises(_http.SinkError) as caught:
            t.request("GET", "/f", sink=Full())
        self.assertEqual(caught.exception.error.errno, 28)
        self.assertEqual(len(server.requests), 2)

    def test_request_lines_cannot_be_bent(self):
        server = self.serve([OK])
        t = self.transport(server)
        for method, target in (("GET", "/a b"), ("GET", "/a\r\nX: y"), ("GE T", "/"),
                               ("GET", "relative")):
            with self.subTest(target):
                with self.assertRaises(ValueError):
                    t.request(method, target)
        self.assertEqual(server.requests, [])

    def test_header_values_cannot_inject_lines(self):
        server = self.serve([OK])
        with self.assertRaises(ValueError):
            self.transport(server).request("GET", "/", headers={"Idempotency-Key": "a\r\nX: y"})

    def test_silent_server_times_out(self):
        server = self.serve()  # accepts nothing: the listen backlog holds the connection
        t = self.transport(server, timeout=0.3)
        with self.assertRaises(OSError):
            t.request("GET", "/")

    def test_quote_matches_urllib(self):
        import random
        from urllib.parse import quote as urllib_quote
        rng = random.Random(7)
        alphabet = "aZ09_.-~/ %?#&=+:;@!$'()*,[]\\\"<>^`{|}\t\n\u00e9\u4e2d\U0001f600"
        for _ in range(3000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
            for safe in ("", "/", "/:@"):
                self.assertEqual(_http.quote(text, safe=safe), urllib_quote(text, safe=safe),
                                 (text, safe))

    def test_split_url(self):
        cases = {
            "unix:///run/ty.sock": ("unix", "", None, "/run/ty.sock"),
            "unix://rel/ty.sock": ("unix", "", None, "rel/ty.sock"),
            "http://127.0.0.1:8080": ("http", "127.0.0.1", 8080, ""),
            "HTTPS://Daemon.Example:443/prefix/?q#f": ("https", "daemon.example", 443,
                                                       "/prefix/"),
            "http://[::1]:9/x": ("http", "::1", 9, "/x"),
            "http://host": ("http", "host", None, ""),
        }
        for url, want in cases.items():
            with self.subTest(url):
                self.assertEqual(_http.split_url(url), want)
        for url in ("127.0.0.1:80", "http://u:p@host/", "http://[::1/", "http://[::1]x/",
                    "http://h:-1/", "http://h:65536/", "http://h:\u0663/"):
            with self.subTest(url):
                with self.assertRaises(ValueError):
                    _http.split_url(url)

    def test_bad_urls(self):
        for url in ("ftp://x", "unix://", "http://", "http://host:99999", "http://host:0"):
            with self.subTest(url):
                with self.assertRaises(ValueError):
                    _http.Transport(url, "")


@unittest.skipUnless(shutil.which("openssl") or os.environ.get("TRAINYARD_REQUIRE_SERVICES"),
                     "openssl is not installed")
class HttpsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ty-tls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cert = self.make_cert("IP:127.0.0.1")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert[0], self.cert[1])

    def make_cert(self, san):
        cert = os.path.join(self.dir, "%s.pem" % san.replace(":", "_"))
        key = cert + ".key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=trainyard-test", "-addext", "subjectAltName=" + san,
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        return cert, key

    def test_request_over_tls_with_the_daemons_certificate(self):
        server = ScriptedServer([[OK, OK]], tls_context=self.context)
        self.addCleanup(server.close)
        with open(self.cert[0]) as f:
            t = _http.Transport(server.url, "tok", timeout=5, ca_pem=f.read())
        self.addCleanup(t.close)
        self.assertEqual(t.request("GET", "/a"), (200, b"ok"))
        self.assertEqual(t.request("GET", "/b"), (200, b"ok"))
        self.assertEqual(t.connections_opened, 1)
        self.assertIn(b"Host: 127.0.0.1:%d\r\n" % int(server.url.rsplit(":", 1)[1]),
                      server.requests[0][0])

    def test_a_certificate_for_another_name_is_refused(self):
        other = self.make_cert("DNS:elsewhere.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(other[0], other[1])
        server = ScriptedServer([[OK]], tls_context=context)
        self.addCleanup(server.close)
        with open(other[0]) as f:
            t = _http.Transport(server.url, "tok", timeout=5, ca_pem=f.read())
        with self.assertRaises(ssl.SSLError):
            t.request("GET", "/")

    def test_an_unknown_certificate_is_refused(self):
        server = ScriptedServer([[OK]], tls_context=self.context)
        self.addCleanup(server.close)
        t = _http.Transport(server.url, "tok", timeout=5)  # the system's authorities only
        with self.assertRaises(ssl.SSLError):
            t.request("GET", "/")


if __name__ == "__main__":
    sys.exit(unittest.main())
