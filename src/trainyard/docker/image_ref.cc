// Parsing of image references ("name[:tag][@digest]") by Docker's rules: the part before the
// first '/' is a registry when it contains '.' or ':' or is "localhost"; otherwise the image
// lives on Docker Hub.

#include <string>
#include <string_view>

#include "trainyard/docker/engine.h"

namespace trainyard::docker {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// A path component: lower-case alphanumerics separated by ".", "_", "__" or runs of "-".
bool IsValidPathComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !IsLowerAlnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
    i = j;
  }
  return true;
}

// A registry host: letters, digits, '.', '-', and an optional ":port"; or a bracketed IPv6.
bool IsValidRegistry(std::string_view r) {
  if (r.empty()) return false;
  std::string_view host = r;
  std::string_view port;
  if (r.front() == '[') {
    size_t close = r.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : r.substr(1, close - 1)) {
      if (!(IsHex(c) || (c >= 'A' && c <= 'F') || c == ':' || c == '.')) return false;
    }
    std::string_view rest = r.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
    host = {};
  } else if (size_t colon = r.find(':'); colon != std::string_view::npos) {
    host = r.substr(0, colon);
    port = r.substr(colon + 1);
    if (port.empty()) return false;
  }
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  if (r.front() == '[') return true;
  if (host.empty() || host.front() == '.' || host.front() == '-' || host.back() == '.' ||
      host.back() == '-') {
    return false;
  }
  for (char c : host) {
    if (!(IsAlnum(c) || c == '.' || c == '-')) return false;
  }
  return true;
}

bool IsValidTag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  if (!(IsAlnum(t.front()) || t.front() == '_')) return false;
  for (char c : t) {
    if (!(IsAlnum(c) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

bool IsValidDigest(std::string_view d) {
  size_t colon = d.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view algo = d.substr(0, colon);
  std::string_view hex = d.substr(colon + 1);
  for (char c : algo) {
    if (!(IsLowerAlnum(c) || c == '+' || c == '.' || c == '_' || c == '-')) return false;
  }
  if (hex.size() < 32) return false;
  for (char c : hex) {
    if (!IsHex(c)) return false;
  }
  return algo != "sha256" || hex.size() == 64;
}

}  // namespace

std::string ImageRef::ToString() const {
  std::string out = repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

StatusOr<ImageRef> ParseImageRef(std::string_view ref) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument("invalid image reference \"" + std::string(ref) +
                           "\": " + std::string(why));
  };
  if (ref.empty()) return bad("it is empty");
  if (ref.size() > 512) return bad("it is longer than 512 characters");

  ImageRef out;
  std::string_view rest = ref;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    out.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!IsValidDigest(out.digest)) return bad("the digest must look like sha256:<64 hex digits>");
  }
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    out.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!IsValidTag(out.tag)) {
      return bad("the tag must be 1-128 of [A-Za-z0-9_.-] and not start with '.' or '-'");
    }
  }
  if (rest.empty()) return bad("the name is empty");

  std::string_view path = rest;
  size_t first_slash = rest.find('/');
  if (first_slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, first_slash);
    if (first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
        (!first.empty() && first.front() == '[')) {
      if (!IsValidRegistry(first)) return bad("the registry part is not a valid host[:port]");
      out.registry = std::string(first);
      path = rest.substr(first_slash + 1);
    }
  }
  if (out.registry.empty()) out.registry = "docker.io";
  if (path.empty()) return bad("the repository is empty");
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view component = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!IsValidPathComponent(component)) {
      return bad(
          "repository names use lower-case letters, digits and single '.', '_', '__' "
          "or '-' separators between '/'-separated parts");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  out.repository = std::string(rest);
  if (out.tag.empty() && out.digest.empty()) out.tag = "latest";
  return out;
}

}  // namespace trainyard::docker
