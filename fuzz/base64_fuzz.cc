// Base64 decoding (registry auth in docker config.json, digests): never a crash, and whatever
// decodes re-encodes to something that decodes to the same bytes.
#include <cstdlib>
#include <string>

#include "trainyard/common/util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  if (trainyard::Base64Decode(in, &out)) {
    std::string again;
    if (!trainyard::Base64Decode(trainyard::Base64Encode(out), &again) || again != out)
      std::abort();
    if (!trainyard::Base64Decode(trainyard::Base64UrlEncode(out), &again) || again != out) {
      std::abort();
    }
  }
  return 0;
}
