#pragma once

// The small XML answers of object-store services (listings, errors), read with libxml2 without
// network access or entity expansion.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::assets {

// An XML document reduced to what listings need.
struct XmlRecords {
  // Each element named `record` (e.g. "Blob", "Contents"), as the text of its descendant
  // elements by local name ("Name", "Content-Length", ...); the first wins on repeats.
  std::vector<std::map<std::string, std::string>> records;
  // The text of the first element of each local name outside the records (e.g. "NextMarker",
  // "Code", "Message").
  std::map<std::string, std::string> fields;
};

// Parses `text`. InvalidArgument "not XML: ..." when it is not a well-formed document.
StatusOr<XmlRecords> ParseXmlRecords(std::string_view text, std::string_view record);

}  // namespace trainyard::assets
