// `trainyard datastore ...`: create, list, show and delete datastores (docs/data.md).
#include "trainyard/cli/command.h"
#include "trainyard/spec/datastore.h"

namespace trainyard::cli {
namespace {

std::string DatastorePath(const std::string& name) {
  return "/api/v1/datastores/" + HttpClient::UrlEncode(name);
}

// Where the datastore's data is: a folder, a container's URL or a bucket's.
std::string Location(const json& d) {
  json copy = d;
  copy.erase("outcome");  // the create answer's
  auto def = spec::DatastoreDefinition::FromJson(copy);
  return def.ok() ? def->Location() : "?";
}

std::string Credentials(const json& d) {
  const json c = d.value("credentials", json::object());
  if (c.contains("account_key")) return "account key";
  if (c.contains("sas_token")) return "SAS token";
  if (c.contains("access_key_id")) return "key " + Str(c, "access_key_id");
  return Str(d, "type") == "local" ? "-" : "anonymous";
}

int DatastoreCreate(Session& s, const std::string& file, const std::optional<std::string>& name,
                    const std::string& output) {
  auto def = spec::ParseDatastoreFile(file);
  if (!def.ok()) return Fail(def.status());
  if (name) def->name = *name;
  if (Status st = def->Validate(); !st.ok()) return Fail(st);
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  // Secrets in plain text to the daemon (loopback or TLS), which seals them.
  auto res =
      (*http)->Request("POST", "/api/v1/datastores", def->ToJson(spec::SecretMode::kPlain).dump(),
                       "application/json", 60000);
  if (!res.ok()) return Fail(res.status());
  if (Status st = StatusFromHttpResult(*res); !st.ok()) return Fail(st);
  auto stored = json::parse(res->body, nullptr, false);
  if (!stored.is_object()) return Fail(Internal("the daemon sent a malformed datastore answer"));
  if (output == "json") {
    PrintJson(stored);
    return 0;
  }
  const std::string outcome = Str(stored, "outcome");
  std::cout << (outcome == "created"   ? "Created datastore "
                : outcome == "updated" ? "Updated datastore "
                                       : "Datastore exists with the same settings: ")
            << Str(stored, "name") << " (" << Str(stored, "type") << ", " << Location(stored)
            << "); access checked\n";
  return 0;
}

int DatastoreList(Session& s, const std::string& output) {
  auto all = s.GetJson("/api/v1/datastores");
  if (!all.ok()) return Fail(all.status());
  if (output == "json") {
    PrintJson(*all);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : *all) {
    rows.push_back({Str(d, "name"), Str(d, "type"), Location(d), Credentials(d)});
  }
  std::cout << RenderTable({"NAME", "TYPE", "LOCATION", "CREDENTIALS"}, rows);
  return 0;
}

int DatastoreShow(Session& s, const std::string& name, const std::string& output) {
  auto d = s.GetJson(DatastorePath(name));
  if (!d.ok()) return Fail(d.status());
  if (output == "json") {
    PrintJson(*d);
    return 0;
  }
  std::cout << "Datastore " << Str(*d, "name") << "\n"
            << "  type         " << Str(*d, "type") << "\n"
            << "  location     " << Location(*d) << "\n"
            << "  credentials  " << Credentials(*d) << "\n";
  if (!Str(*d, "description").empty())
    std::cout << "  description  " << Str(*d, "description") << "\n";
  std::cout << "  paths        azureml://datastores/" << Str(*d, "name") << "/paths/<path>\n";
  return 0;
}

int DatastoreDelete(Session& s, const std::string& name) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto deleted = (*http)->DeleteJson(DatastorePath(name));
  if (!deleted.ok()) return Fail(deleted.status());
  std::cout << "Deleted datastore " << name << " (its data is left where it is)\n";
  return 0;
}

}  // namespace

void AddDatastoreCommands(CommandLine& cl) {
  struct Options {
    std::string file;
    std::optional<std::string> name_override;
    std::string name;
  };
  auto o = std::make_shared<Options>();
  auto* ds = cl.app.add_subcommand("datastore", "Create and inspect datastores (docs/data.md)");
  ds->require_subcommand(1);
  auto* create = ds->add_subcommand(
      "create", "Create or update a datastore from a YAML file; its access is checked first");
  create->add_option("-f,--file", o->file, "Datastore YAML file (docs/data.md)")->required();
  create->add_option("--name", o->name_override, "Name, overriding the file's");
  cl.AddOutput(create);
  cl.Then(create, [o, &cl](Session& s) {
    return DatastoreCreate(s, o->file, o->name_override, cl.output);
  });
  auto* list = ds->add_subcommand("list", "List the workspace's datastores");
  cl.AddOutput(list);
  cl.Then(list, [&cl](Session& s) { return DatastoreList(s, cl.output); });
  auto* show = ds->add_subcommand("show", "Show a datastore (never its secrets)");
  show->add_option("name", o->name, "Datastore name")->required();
  cl.AddOutput(show);
  cl.Then(show, [o, &cl](Session& s) { return DatastoreShow(s, o->name, cl.output); });
  auto* del = ds->add_subcommand("delete", "Delete a datastore (not its data)");
  del->add_option("name", o->name, "Datastore name")->required();
  cl.Then(del, [o](Session& s) { return DatastoreDelete(s, o->name); });
}

}  // namespace trainyard::cli
