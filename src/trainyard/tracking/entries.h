#pragma once

// Non-scalar run entries (docs/tracking.md "Other entries"): lists, rows, tables and images,
// stored as typed JSON. Functions here are pure and thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::tracking {

enum class EntryKind { kList, kRow, kTable, kImage };

std::string_view EntryKindName(EntryKind kind);
std::optional<EntryKind> ParseEntryKind(std::string_view name);

struct Entry {
  std::string name;  // Same rules as metric names (ValidateMetricName).
  EntryKind kind = EntryKind::kList;
  // Compact JSON, validated for `kind`:
  //   list:  an array of numbers;
  //   row:   an object of column -> number;
  //   table: an object of column -> array of numbers, all of one length;
  //   image: {"path": "<relative path of a run file>"}.
  // Numbers may be the strings "NaN", "Infinity", "-Infinity".
  std::string value_json;
  std::optional<std::int64_t> step;
  std::string description;
  // Unix-epoch milliseconds; the store fills in the time of arrival when absent.
  std::optional<std::int64_t> timestamp;
};

// Parses `{"entries": [{"name", "kind", "value", "step", "description", "timestamp"}]}` and
// validates each entry. InvalidArgument naming the entry: `entry 3 ("conf"): value: ...`.
StatusOr<std::vector<Entry>> ParseEntriesJson(std::string_view body);

// Validates one entry (name, kind-specific value). The message has no entry prefix.
Status ValidateEntry(const Entry& entry);

// `{"entries": [...]}` with each entry as an object, `value` embedded as JSON.
std::string EntriesToJson(const std::vector<Entry>& entries);

}  // namespace trainyard::tracking
