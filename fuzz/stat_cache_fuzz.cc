// The snapshot stat cache, read back from a file any process of the user could have written:
// a corrupt cache is dropped, never trusted or crashed on.
#include <fstream>

#include "fuzz/fuzz_util.h"
#include "trainyard/cas/stat_cache.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = fuzz::ScratchDir() / "statcache";
  static const std::filesystem::path source = "/fuzz/source/tree";
  std::filesystem::create_directories(dir);
  std::ofstream(cas::internal::StatCache::FileFor(dir, source), std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  cas::internal::StatCache cache = cas::internal::StatCache::Load(dir, source);
  cas::internal::FileStat st;
  st.size = 1;
  (void)cache.Lookup("a.txt", st);
  return 0;
}
