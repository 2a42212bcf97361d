// Entries (log_list, log_row, log_table, log_image) as runs post them, and as they are listed.
#include "trainyard/tracking/entries.h"
#include "trainyard/tracking/metric_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto entries = trainyard::tracking::ParseEntriesJson(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (entries.ok()) {
    for (const auto& e : *entries) (void)trainyard::tracking::QuoteName(e.name);
  }
  return 0;
}
