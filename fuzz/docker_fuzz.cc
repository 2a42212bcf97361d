// What the Docker engine and the user's docker config hand the daemon: image references, the
// multiplexed log stream (cut into arbitrary chunks), config.json's auths, the JSON message
// stream of pulls and builds, and the timestamped log stream a re-attach resumes from.
#include <cstdlib>
#include <fstream>

#include "fuzz/fuzz_util.h"
#include "trainyard/docker/docker_config.h"
#include "trainyard/docker/engine.h"
#include "trainyard/docker/json_messages.h"
#include "trainyard/docker/log_demux.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t step = 1 + data[0] % 7;
  switch (data[0] % 5) {
    case 0:
      if (auto ref = docker::ParseImageRef(text); ref.ok()) (void)ref->ToString();
      break;
    case 1: {
      // The same stream in one piece and in chunks of the first byte's size: same payload.
      std::string whole, chunked;
      docker::LogDemuxer a([&](docker::LogDemuxer::Stream, std::string_view s) { whole += s; });
      docker::LogDemuxer b([&](docker::LogDemuxer::Stream, std::string_view s) { chunked += s; });
      const bool ok_a = a.Feed(text).ok();
      bool ok_b = true;
      for (std::size_t i = 0; i < text.size() && ok_b; i += step) {
        ok_b = b.Feed(std::string_view(text).substr(i, step)).ok();
      }
      if (ok_a != ok_b || (ok_a && whole != chunked)) std::abort();
      break;
    }
    case 3: {
      // Pull and build progress: the same text and error whole and in chunks; no line longer
      // than the bound.
      std::string whole, chunked;
      docker::TextSink sink_a = [&](std::string_view t) {
        if (t.size() > docker::LineSplitter::kMaxLine) std::abort();
        whole.append(t).push_back('\n');
      };
      docker::TextSink sink_b = [&](std::string_view t) { chunked.append(t).push_back('\n'); };
      docker::JsonMessageStream a(sink_a, {"s3cret"});
      docker::JsonMessageStream b(sink_b, {"s3cret"});
      a.Feed(text);
      a.Finish();
      for (std::size_t i = 0; i < text.size(); i += step)
        b.Feed(std::string_view(text).substr(i, step));
      b.Finish();
      if (whole != chunked || a.failed() != b.failed() || a.error() != b.error()) std::abort();
      if (whole.find("s3cret") != std::string::npos ||
          a.error().find("s3cret") != std::string::npos) {
        std::abort();
      }
      break;
    }
    case 4: {
      // "<position>\n<log stream with timestamps>": what a resumed follow delivers, whole and in
      // chunks, is the same; every position handed out reads back.
      const std::size_t nl = text.find('\n');
      const auto from =
          docker::LogPosition::Parse(text.substr(0, nl == std::string::npos ? 0 : nl));
      if (!from) break;
      const std::string stream = nl == std::string::npos ? text : text.substr(nl + 1);
      auto follow = [&](std::size_t chunk, std::string* out) {
        docker::TimestampedLog log(*from, [&](std::string_view d, const docker::LogPosition& at) {
          out->append(d);
          const auto back = docker::LogPosition::Parse(at.ToString());
          if (!back || back->ToString() != at.ToString()) std::abort();
        });
        Status bad;
        docker::LogDemuxer* self = nullptr;
        docker::LogDemuxer demuxer([&](docker::LogDemuxer::Stream, std::string_view piece) {
          if (bad.ok()) bad = log.Piece(piece, self->AtFrameBoundary());
        });
        self = &demuxer;
        for (std::size_t i = 0; i < stream.size() && bad.ok(); i += chunk) {
          if (!demuxer.Feed(std::string_view(stream).substr(i, chunk)).ok()) return false;
        }
        return bad.ok();
      };
      std::string whole, chunked;
      const bool ok_a = follow(stream.size() + 1, &whole);
      const bool ok_b = follow(step, &chunked);
      if (ok_a != ok_b || (ok_a && whole != chunked)) std::abort();
      break;
    }
    default: {
      const auto path = fuzz::ScratchDir() / "config.json";
      std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
      for (const char* reg : {"127.0.0.1:5000", "docker.io", "ghcr.io"}) {
        (void)docker::LookupDockerConfigAuth(path, reg);
      }
      break;
    }
  }
  return 0;
}
