// `trainyard env ...`: register and inspect environments.
#include "trainyard/cli/command.h"
#include "trainyard/common/util.h"

namespace trainyard::cli {
namespace {

int EnvCreate(Session& s, const std::string& file, const std::string& registry,
              const std::string& output) {
  auto env = spec::ParseEnvironmentFile(file);
  if (!env.ok()) return Fail(env.status());
  if (env->name.empty()) {
    return Fail(InvalidArgument(file + ": an environment to register needs a 'name'"));
  }
  auto def = s.Definition(*env);
  if (!def.ok()) return Fail(def.status());
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto rec = (*http)->PostJson(ApiBase(registry) + "/environments",
                               def->ToJson(spec::SecretMode::kPlain), 600000);
  if (!rec.ok()) return Fail(rec.status());
  if (output == "json") {
    PrintJson(*rec);
  } else {
    std::cout << "Environment " << Str(*rec, "name") << ":" << Str(*rec, "version") << " (image "
              << Str(*rec, "image") << ")";
    if (!registry.empty()) std::cout << " in registry " << registry << ": " << Str(*rec, "id");
    std::cout << "\n";
  }
  return 0;
}

int EnvList(Session& s, const std::string& registry, const std::string& output) {
  auto envs = s.GetJson(ApiBase(registry) + "/environments");
  if (!envs.ok()) return Fail(envs.status());
  if (output == "json") {
    PrintJson(*envs);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : *envs) {
    rows.push_back(
        {Str(e, "name"), Str(e, "version"), Str(e, "created_at").substr(0, 19), Str(e, "image")});
  }
  std::cout << RenderTable({"NAME", "VERSION", "CREATED", "IMAGE"}, rows);
  return 0;
}

int EnvShow(Session& s, std::string ref, const std::string& registry, const std::string& output) {
  if (StartsWith(ref, "azureml:")) ref = ref.substr(8);
  std::string name = ref, version = "latest";
  if (auto colon = ref.find(':'); colon != std::string::npos) {
    name = ref.substr(0, colon);
    version = ref.substr(colon + 1);
  } else if (auto at = ref.find('@'); at != std::string::npos) {
    name = ref.substr(0, at);
    version = ref.substr(at + 1);
  }
  auto rec = s.GetJson(ApiBase(registry) + "/environments/" + HttpClient::UrlEncode(name) +
                       "/versions/" + HttpClient::UrlEncode(version));
  if (!rec.ok()) return Fail(rec.status());
  if (output == "json") {
    PrintJson(*rec);
  } else {
    std::cout << "Name:       " << Str(*rec, "name") << "\n"
              << "Version:    " << Str(*rec, "version") << "\n"
              << "Created:    " << Str(*rec, "created_at") << "\n"
              << "Image:      " << Str(*rec, "image") << "\n"
              << "Definition:\n"
              << (*rec)["definition"].dump(2) << "\n";
  }
  return 0;
}

}  // namespace

void AddEnvCommands(CommandLine& cl) {
  struct Options {
    std::string file, name, registry;
  };
  auto o = std::make_shared<Options>();
  auto* env = cl.app.add_subcommand("env", "Register and inspect environments");
  env->alias("environment");
  env->require_subcommand(1);
  auto* create = env->add_subcommand("create", "Register an environment from a YAML file");
  create->add_option("-f,--file", o->file, "Environment YAML file")->required();
  create->add_option("--registry", o->registry, "Publish it to this registry instead");
  cl.AddOutput(create);
  cl.Then(create, [o, &cl](Session& s) { return EnvCreate(s, o->file, o->registry, cl.output); });
  auto* list = env->add_subcommand("list", "List environments and their versions");
  list->add_option("--registry", o->registry, "The environments of this registry");
  cl.AddOutput(list);
  cl.Then(list, [o, &cl](Session& s) { return EnvList(s, o->registry, cl.output); });
  auto* show = env->add_subcommand("show", "Show an environment (NAME[:VERSION])");
  show->add_option("name", o->name, "NAME, NAME:VERSION or NAME@latest")->required();
  show->add_option("--registry", o->registry, "An environment of this registry");
  cl.AddOutput(show);
  cl.Then(show, [o, &cl](Session& s) { return EnvShow(s, o->name, o->registry, cl.output); });
}

}  // namespace trainyard::cli
