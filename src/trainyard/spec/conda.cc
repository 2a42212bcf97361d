// ParseCondaYaml: a conda environment file (name, channels, dependencies with a pip part).

#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "trainyard/spec/spec.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace {

using internal::Entry;
using internal::Mapping;
using internal::SourceFile;

constexpr std::array<std::string_view, 4> kCondaKeys = {"name", "channels", "dependencies",
                                                        "prefix"};

// The package name of a conda match spec: "conda-forge::python=3.11" → "python".
std::string PackageName(std::string_view spec) {
  size_t channel = spec.find("::");
  if (channel != std::string_view::npos) spec = spec.substr(channel + 2);
  size_t end = spec.find_first_of("=<>!~ \t[");
  std::string name(spec.substr(0, end));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace

namespace {

StatusOr<CondaSpec> ParseConda(const SourceFile& file, const std::string& text) {
  TY_ASSIGN_OR_RETURN(YAML::Node root,
                      internal::LoadMappingDocument(file, text, "conda environment"));
  TY_ASSIGN_OR_RETURN(Mapping top, Mapping::Read(file, root, "", "conda environment", kCondaKeys));
  CondaSpec conda;
  conda.text = text;
  if (const Entry* e = top.Find("name")) {
    TY_ASSIGN_OR_RETURN(std::string name, internal::ReadString(file, *e));
    (void)name;  // the name of a conda environment has no meaning inside a container
  }
  if (const Entry* e = top.Find("channels")) {
    if (!e->value.IsNull()) {
      TY_ASSIGN_OR_RETURN(conda.channels, internal::ReadStringList(file, *e));
    }
  }
  const Entry* deps = top.Find("dependencies");
  if (deps == nullptr || deps->value.IsNull()) return conda;
  if (!deps->value.IsSequence()) {
    return file.ErrorAt(deps->mark(),
                        "'dependencies' must be a list, got " + internal::Describe(deps->value));
  }
  bool have_pip = false;
  size_t index = 0;
  for (const auto& item : deps->value) {
    std::string item_path = "dependencies[" + std::to_string(index++) + "]";
    if (item.IsScalar()) {
      std::string name = PackageName(item.Scalar());
      if (name.empty()) {
        return file.ErrorAt(item.Mark(), "'" + item_path + "' is not a package spec");
      }
      if (name != "python" && name != "pip") conda.conda_packages.push_back(item.Scalar());
      continue;
    }
    if (!item.IsMap()) {
      return file.ErrorAt(item.Mark(), "'" + item_path +
                                           "' must be a package spec or {pip: [...]}, got " +
                                           internal::Describe(item));
    }
    constexpr std::array<std::string_view, 1> kPipKey = {"pip"};
    TY_ASSIGN_OR_RETURN(Mapping pip_map, Mapping::Read(file, item, item_path, item_path, kPipKey));
    const Entry* pip = pip_map.Find("pip");
    if (pip == nullptr) {
      return file.ErrorAt(item.Mark(), "'" + item_path + "' must be {pip: [...]}");
    }
    if (have_pip) {
      return file.ErrorAt(item.Mark(),
                          "a second {pip: [...]} entry in dependencies; merge the "
                          "two lists into one");
    }
    have_pip = true;
    if (!pip->value.IsNull()) {
      TY_ASSIGN_OR_RETURN(conda.pip, internal::ReadStringList(file, *pip));
    }
  }
  return conda;
}

}  // namespace

StatusOr<CondaSpec> ParseCondaYaml(const std::string& text, const std::string& file_name) {
  ParseOptions options;
  SourceFile file(file_name, {}, options);
  try {
    return ParseConda(file, text);
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "cannot read YAML: " + e.msg);
  }
}

}  // namespace trainyard::spec
