#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus/<target>/ from the project's own test cases and
examples (run once; the corpus then lives in the repository and grows with every crash found).
Selector bytes: some targets read their first byte to choose a parser (see each *_fuzz.cc)."""
import glob, hashlib, json, os, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
SEP = b"\x00\xff"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


for s in ["aGVsbG8=", "aGVsbG8", "aGk_LQ==", "", "====", "YWJj\nZGVm", "!@#$"]:
    put("base64", s)
for s in ["outputs/model.pt", "../x", "a//b/./c", "/etc/passwd", "outputs/../../x", ".", "a\0b",
          "logs/../outputs/x"]:
    put("paths", s)
for tok, method, path in [("tyr2.r1.1800000100.AAAA", "GET", "/api/v1/jobs/r1/metrics"),
                          ("tyr2.r1.9.x", "PUT", "/api/v1/jobs/r1/files/outputs/a"),
                          ("tyr2..", "PUT", "/api/v1/jobs/r1/files/slurm/env.sh"),
                          ("x", "POST", "/api/v1/jobs/r1/files/outputs/../slurm")]:
    put("run_token", tok.encode() + SEP + method.encode() + SEP + path.encode())

reqs = [
    "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /api/v1/jobs/r1/metrics?max_points=5&x=%41+b HTTP/1.1\r\nAuthorization: Bearer RUNTOKEN\r\n\r\n",
    "PUT /api/v1/jobs/r1/files/outputs/a%2Fb HTTP/1.1\r\nAuthorization: Bearer RUNTOKEN\r\n"
    "Content-Length: 5\r\n\r\nhello",
    "POST /api/v1/jobs/r2/metrics HTTP/1.1\r\nAuthorization: Bearer RUNTOKEN\r\n"
    "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /api/v1/jobs/r1/../r2/tags HTTP/1.1\r\nAuthorization: bearer RUNTOKEN\r\n\r\n",
    "PATCH /api/v1/jobs/x HTTP/1.1\r\nAuthorization: Bearer workspace-token\r\n"
    "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    "GET /%zz HTTP/1.0\r\n\r\n",
]
for r in reqs:
    put("http", r)

put("metrics_body", b"\x01" + json.dumps({"series": [{"name": "loss", "values": [0.9, "NaN"],
                                                       "steps": [0, 1],
                                                       "timestamps": [1, 2]}]}).encode())
binary = b"TYM1" + struct.pack("<I", 1) + struct.pack("<H", 4) + b"loss" + struct.pack("<I", 2) \
    + bytes([3]) + struct.pack("<2d", 0.5, 0.25) + struct.pack("<2q", 0, 1) + struct.pack("<2q", 7, 8)
put("metrics_body", b"\x00" + binary)
put("entries", json.dumps({"entries": [
    {"name": "l", "kind": "list", "value": [1, 2, "NaN"]},
    {"name": "r", "kind": "row", "value": {"a": 1}, "step": 3},
    {"name": "t", "kind": "table", "value": {"a": [1, 2]}},
    {"name": "img", "kind": "image", "value": {"path": "images/img/0.png"}}]}))

for m in glob.glob("/tmp/ty-*/ws/snapshots/*.json")[:3]:
    put("manifest", read(m))
put("manifest", json.dumps({"version": 1, "entries": [
    {"path": "a.txt", "type": "file", "mode": "0644", "size": 1,
     "digest": "sha256:" + "0" * 64},
    {"path": "d/y", "type": "symlink", "target": ".."},
    {"path": "z", "type": "symlink", "target": "d/y/.."}]}).encode() + SEP + b"z" + SEP + b"d/y/..")

for t in ["*.ckpt\n!keep.ckpt\n/build/\n**/tmp/**\n\\#x\n", "a/**/b\n*\n!*/\n", "[a-z]*.py\n?x\n"]:
    put("ignore", t.encode() + SEP + b"data/" + SEP + b"sub/a/tmp/b.ckpt")
put("stat_cache", b"")
put("stat_cache", b"TYSC1\n" + b"\x00" * 40)

put("spec_json", json.dumps({"experiment_name": "e", "command": "python train.py",
                             "environment": {"image": "python:3.11-slim",
                                             "user_managed_dependencies": True},
                             "inputs": {"epochs": {"kind": "literal", "value": "4"}},
                             "timeout_seconds": 5}))
put("spec_json", json.dumps({"name": "hpc", "type": "slurm", "partition": "debug", "max_nodes": 2,
                             "registry": {"address": "127.0.0.1:5000", "username": "u",
                                          "password": "p"}}))

for f in glob.glob(os.path.join(root, "tests/cases/*-specs/*.yml")):
    base = os.path.basename(f)
    sel = 1 if base.startswith("env") else 2 if "compute" in base else 3 if "conda" in base else 0
    put("yaml", bytes([sel]) + read(f))
put("yaml", b"\x04python t.py ${{inputs.a}} $[[--b ${{inputs.c}}]] ${{outputs.o}}")
put("yaml", b"\x05512m")

for f in glob.glob(os.path.join(root, "src/trainyard/slurm/testdata/*.json")):
    put("slurm", bytes([0 if "squeue" in f else 1]) + read(f))
for s in [b"0 run\n", b"3 pull\n", b"1 true 0 1700000000000000000\n", b"-1 x\n"]:
    put("slurm", b"\x02" + s)

for s in ["python:3.11-slim", "127.0.0.1:5000/team/img@sha256:" + "a" * 64, "UPPER/x", "a::b"]:
    put("docker", b"\x00" + s.encode())
put("docker", b"\x01" + b"\x01\x00\x00\x00\x00\x00\x00\x05hello" + b"\x02\x00\x00\x00\x00\x00\x00\x03err")
put("docker", b"\x02" + json.dumps({"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"},
                                              "https://index.docker.io/v1/": {"username": "u",
                                                                              "password": "p"}},
                                    "credHelpers": {"ghcr.io": "x"}}).encode())
for lines in [
        [{"status": "Pulling from team/img", "id": "latest"},
         {"status": "Downloading", "id": "abc", "progress": "[=>   ] 1MB/5MB"}],
        [{"stream": "Step 1/2 : FROM scratch\n"}, {"stream": "partial "}, {"stream": "line\n"},
         {"aux": {"ID": "sha256:" + "b" * 64}}],
        [{"errorDetail": {"message": "unauthorized: s3cret"}, "error": "unauthorized"}]]:
    put("docker", b"\x03" + b"\r\n".join(json.dumps(m).encode() for m in lines) + b"\n")
put("docker", b"\x03not json\n{\"stream\": 5}\n")


def frame(stream, payload):
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


stream = (frame(1, b"2026-12-06T18:00:00.000000001Z one\n") +
          frame(2, b"2026-12-06T18:00:00.000000001Z two\n") +
          frame(1, b"2026-12-06T18:00:01+01:00 three\n"))
put("docker", b"\x04\n" + stream)
put("docker", b"\x04" + b"2026-12-06T18:00:00.000000001Z 1\n" + stream)
put("docker", b"\x04" + b"2026-12-06T18:00:00.000000001Z 5\n" + frame(1, b"no timestamp\n"))

for s in [b"1234 987654 0f1e2d3c-aaaa\n", b"77 1", b"-5 3", b"99999999999999999999 1", b"x y"]:
    put("process_files", b"\x00" + s)
for s in [b'{"exit_code": 3, "signal": 0}', b'{"exit_code": 1e99}', b'{"exit_code": -2147483649}',
          b"[]", b""]:
    put("process_files", b"\x01" + s)
print("seeds written to", os.path.join(here, "corpus"))
