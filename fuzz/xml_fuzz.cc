// The XML answers of object stores (Azure Blob and S3 listings and errors): a datastore's service
// is reached over the network, and its answers are parsed without network access or entities.
#include <string_view>

#include "trainyard/assets/xml.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const char* record : {"Blob", "Contents"}) {
    auto xml = assets::ParseXmlRecords(text, record);
    if (xml.ok()) {
      for (const auto& rec : xml->records) (void)rec.size();
    }
  }
  return 0;
}
