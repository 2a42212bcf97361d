// What the Docker engine and the user's docker config hand the daemon: image references, the
// multiplexed log stream (cut into arbitrary chunks), and config.json's auths.
#include <cstdlib>
#include <fstream>

#include "fuzz/fuzz_util.h"
#include "trainyard/docker/docker_config.h"
#include "trainyard/docker/engine.h"
#include "trainyard/docker/log_demux.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      if (auto ref = docker::ParseImageRef(text); ref.ok()) (void)ref->ToString();
      break;
    case 1: {
      // The same stream in one piece and in chunks of the first byte's size: same payload.
      std::string whole, chunked;
      docker::LogDemuxer a([&](docker::LogDemuxer::Stream, std::string_view s) { whole += s; });
      docker::LogDemuxer b([&](docker::LogDemuxer::Stream, std::string_view s) { chunked += s; });
      const bool ok_a = a.Feed(text).ok();
      const std::size_t step = 1 + data[0] % 7;
      bool ok_b = true;
      for (std::size_t i = 0; i < text.size() && ok_b; i += step) {
        ok_b = b.Feed(std::string_view(text).substr(i, step)).ok();
      }
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
