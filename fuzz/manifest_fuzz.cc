// Snapshot manifests as a remote CLI uploads them, with their symlink rules: a manifest that
// parses and validates prints back to one that parses to the same manifest.
#include <cstdlib>

#include "fuzz/fuzz_util.h"
#include "trainyard/cas/manifest.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto p = fuzz::Parts(data, size, 3);
  auto m = cas::Manifest::FromJson(p[0]);
  if (m.ok() && m->Validate().ok()) {
    auto again = cas::Manifest::FromJson(m->ToJson());
    if (!again.ok() || again->entries != m->entries) std::abort();
  }
  (void)cas::SymlinkStaysInside(p[1], p[2]);
  (void)cas::PrintablePath(p[1]);
  (void)cas::IsValidUtf8(p[2]);
  return 0;
}
