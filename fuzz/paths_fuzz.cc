// Relative paths from clients and runs (files routes, uploads): every accepted path stays
// below its root, lexically and when opened through a RootedDir.
#include <cstdlib>

#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view rel(reinterpret_cast<const char*>(data), size);
  auto parts = SplitRelativePath(rel);
  if (parts.ok()) {
    for (const std::string& p : *parts) {
      if (p.empty() || p == "." || p == ".." || p.find('/') != std::string::npos) std::abort();
    }
  }
  auto under = ResolveUnder("/root/of/it", rel);
  if (under.ok() && !IsWithin("/root/of/it", *under) && *under != "/root/of/it") std::abort();
  return 0;
}
