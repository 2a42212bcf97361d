// `trainyard registry ...`: create or attach, list, show and detach registries (docs/data.md).
#include "trainyard/cli/command.h"

namespace trainyard::cli {
namespace {

std::string Counts(const json& r) {
  if (r.contains("error")) return "unavailable: " + Str(r, "error");
  return std::to_string(r.value("environments", 0)) + " environments, " +
         std::to_string(r.value("models", 0)) + " model versions, " +
         std::to_string(r.value("data", 0)) + " data versions";
}

int RegistryCreate(Session& s, const std::string& name, const std::string& path,
                   const std::string& output) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec).lexically_normal();
  if (ec) return Fail(InvalidArgument("bad path " + path));
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto out = (*http)->PostJson("/api/v1/registries", json{{"name", name}, {"path", abs.string()}});
  if (!out.ok()) return Fail(out.status());
  if (output == "json") {
    PrintJson(*out);
    return 0;
  }
  const std::string outcome = Str(*out, "outcome");
  std::cout << (outcome == "created"    ? "Created registry "
                : outcome == "attached" ? "Attached registry "
                                        : "Registry already attached: ")
            << name << " at " << Str(*out, "path") << "; publish with --registry " << name
            << ", use as azureml://registries/" << name << "/...\n";
  return 0;
}

int RegistryList(Session& s, const std::string& output) {
  auto all = s.GetJson("/api/v1/registries");
  if (!all.ok()) return Fail(all.status());
  if (output == "json") {
    PrintJson(*all);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : *all) rows.push_back({Str(r, "name"), Str(r, "path"), Counts(r)});
  std::cout << RenderTable({"NAME", "PATH", "CONTENT"}, rows);
  return 0;
}

int RegistryShow(Session& s, const std::string& name, const std::string& output) {
  auto r = s.GetJson("/api/v1/registries/" + HttpClient::UrlEncode(name));
  if (!r.ok()) return Fail(r.status());
  if (output == "json") {
    PrintJson(*r);
    return 0;
  }
  std::cout << "Registry " << Str(*r, "name") << "\n"
            << "  path     " << Str(*r, "path") << "\n"
            << "  content  " << Counts(*r) << "\n";
  return 0;
}

int RegistryDelete(Session& s, const std::string& name) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto out = (*http)->DeleteJson("/api/v1/registries/" + HttpClient::UrlEncode(name));
  if (!out.ok()) return Fail(out.status());
  std::cout << "Detached registry " << name
            << " from this workspace (its folder and content stay)\n";
  return 0;
}

}  // namespace

void AddRegistryCommands(CommandLine& cl) {
  struct Options {
    std::string name, path;
  };
  auto o = std::make_shared<Options>();
  auto* reg = cl.app.add_subcommand(
      "registry", "Registries: environments, models and data shared by workspaces (docs/data.md)");
  reg->require_subcommand(1);
  auto* create = reg->add_subcommand(
      "create", "Create a registry in a folder, or attach the one already there");
  create->add_option("--name,-n", o->name, "Registry name (as in azureml://registries/NAME)")
      ->required();
  create->add_option("--path,-p", o->path, "Its folder (e.g. on a shared file system)")->required();
  cl.AddOutput(create);
  cl.Then(create, [o, &cl](Session& s) { return RegistryCreate(s, o->name, o->path, cl.output); });
  auto* list = reg->add_subcommand("list", "The workspace's registries");
  cl.AddOutput(list);
  cl.Then(list, [&cl](Session& s) { return RegistryList(s, cl.output); });
  auto* show = reg->add_subcommand("show", "One registry");
  show->add_option("name", o->name, "Registry name")->required();
  cl.AddOutput(show);
  cl.Then(show, [o, &cl](Session& s) { return RegistryShow(s, o->name, cl.output); });
  auto* del = reg->add_subcommand("delete", "Detach a registry from this workspace");
  del->add_option("name", o->name, "Registry name")->required();
  cl.Then(del, [o](Session& s) { return RegistryDelete(s, o->name); });
}

}  // namespace trainyard::cli
