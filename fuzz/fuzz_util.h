#pragma once

// Shared by the libFuzzer targets in this folder (see fuzz/README.md): reading a fuzz input as
// a few independent strings, and writing one to a scratch file for the parsers that read files.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace trainyard::fuzz {

// Splits `data` at "\x00\xff" separators into at most `n` parts (the rest stays in the last), so
// one input feeds several fields of a parser. Missing parts are empty.
inline std::vector<std::string> Parts(const std::uint8_t* data, std::size_t size, std::size_t n) {
  std::vector<std::string> out;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (out.size() + 1 < n) {
    const std::size_t cut = rest.find(std::string_view("\x00\xff", 2));
    if (cut == std::string_view::npos) break;
    out.emplace_back(rest.substr(0, cut));
    rest.remove_prefix(cut + 2);
  }
  out.emplace_back(rest);
  out.resize(n);
  return out;
}

// A folder of this process for files the target writes (kept between inputs).
inline const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("trainyard-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

}  // namespace trainyard::fuzz
