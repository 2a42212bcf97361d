// `trainyard data ...` and `trainyard model ...`: versions of data assets and models
// (docs/data.md, "Data assets and models").
#include <sys/stat.h>

#include <cstdio>

#include "trainyard/cli/command.h"
#include "trainyard/common/sha256.h"
#include "trainyard/spec/data_uri.h"

namespace trainyard::cli {
namespace {

// What the commands of one noun share.
struct Noun {
  const char* kind;   // "data" | "model"
  const char* route;  // "/data" (under ApiBase)
  const char* title;  // "Data asset" | "Model"
};
constexpr Noun kData{"data", "/data", "Data asset"};
constexpr Noun kModel{"model", "/models", "Model"};

struct Options {
  std::string name, version, type, path, description, label, run, registry, download_path = ".";
  std::vector<std::string> tags;
  bool archived = false;
};

std::string Prefix(const Noun& n, const Options& o) { return ApiBase(o.registry) + n.route; }

std::string VersionPath(const Noun& n, const Options& o) {
  return Prefix(n, o) + "/" + HttpClient::UrlEncode(o.name) + "/versions/" +
         HttpClient::UrlEncode(o.version);
}

// The version `o` names: --version, else --label, else the latest.
std::string ShowPath(const Noun& n, const Options& o) {
  if (!o.version.empty()) return VersionPath(n, o);
  std::string path = Prefix(n, o) + "/" + HttpClient::UrlEncode(o.name);
  if (!o.label.empty()) path += "?label=" + HttpClient::UrlEncode(o.label);
  return path;
}

std::string Where(const json& a) {
  const json s = a.value("storage", json::object());
  if (s.contains("uri")) return Str(s, "uri");
  return std::to_string(s.value("files", 0)) + (s.value("files", 0) == 1 ? " file, " : " files, ") +
         FormatBytes(s.value("bytes", std::uint64_t{0}));
}

// The content of a local path for the daemon: the path itself when the daemon shares this
// machine (it reads it), else uploaded and named by its snapshot.
Status AddLocalContent(Session& s, const std::string& path, json* body) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  struct stat st {};
  if (ec || ::stat(abs.c_str(), &st) != 0) return NotFound(path + " does not exist");
  if (!s.target().remote()) {
    (*body)["path"] = abs.lexically_normal().string();
    return Status::Ok();
  }
  const std::uint64_t unlimited = UINT64_MAX;
  if (S_ISDIR(st.st_mode)) {
    TY_ASSIGN_OR_RETURN(cas::SnapshotResult snap, s.Snapshot(abs, unlimited, unlimited));
    (*body)["snapshot_id"] = snap.id;
    return Status::Ok();
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + " is neither a file nor a folder");
  // One file: its own manifest, uploaded as a snapshot would be.
  cas::SnapshotResult one;
  one.source_root = abs.parent_path();
  TY_ASSIGN_OR_RETURN(std::string digest, Sha256File(abs));
  one.manifest = cas::Manifest::OneFile(abs.filename().string(), std::move(digest),
                                        static_cast<std::uint64_t>(st.st_size),
                                        (st.st_mode & S_IXUSR) != 0 ? 0755 : 0644);
  one.id = one.manifest.Id();
  one.file_count = 1;
  one.total_bytes = one.manifest.TotalBytes();
  TY_ASSIGN_OR_RETURN(HttpClient * http, s.Client());
  TY_RETURN_IF_ERROR(client::UploadSnapshot(*http, one).status());
  (*body)["snapshot_id"] = one.id;
  (*body)["file"] = one.manifest.entries.front().path;
  return Status::Ok();
}

int Create(Session& s, const Noun& n, const Options& o, const std::string& output) {
  json body = {{"name", o.name}};
  if (!o.version.empty()) body["version"] = o.version;
  if (!o.type.empty()) body["type"] = o.type;
  if (!o.description.empty()) body["description"] = o.description;
  if (!o.label.empty()) body["label"] = o.label;
  if (!o.run.empty()) body["run"] = o.run;
  json tags = json::object();
  for (const std::string& t : o.tags) {
    const size_t eq = t.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Fail(InvalidArgument("--tag takes KEY=VALUE, not '" + t + "'"));
    }
    tags[t.substr(0, eq)] = t.substr(eq + 1);
  }
  body["tags"] = tags;
  if (spec::LooksLikeUri(o.path)) {
    body["path"] = o.path;
  } else if (Status st = AddLocalContent(s, o.path, &body); !st.ok()) {
    return Fail(st.WithPrefix(std::string(n.title) + " " + o.name));
  }
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  // Registering a model may fetch it: no short time limit.
  auto created = (*http)->PostJson(Prefix(n, o), body, 3'600'000);
  if (!created.ok()) return Fail(created.status());
  if (output == "json") {
    PrintJson(*created);
    return 0;
  }
  std::cout << "Created " << (n.kind == std::string("data") ? "data asset " : "model ")
            << Str(*created, "name") << ":" << Str(*created, "version") << " ("
            << Str(*created, "type") << ", " << Where(*created) << "); use it as "
            << Str(*created, "id") << "\n";
  return 0;
}

int List(Session& s, const Noun& n, const Options& o, const std::string& output) {
  std::string path = Prefix(n, o);
  std::string sep = "?";
  if (!o.name.empty()) {
    path += "?name=" + HttpClient::UrlEncode(o.name);
    sep = "&";
  }
  if (o.archived) path += sep + "archived=true";
  auto all = s.GetJson(path);
  if (!all.ok()) return Fail(all.status());
  if (output == "json") {
    PrintJson(*all);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : *all) {
    std::vector<std::string> labels = a.value("labels", std::vector<std::string>{});
    rows.push_back({Str(a, "name"), Str(a, "version"), Str(a, "type"), Where(a),
                    labels.empty() ? "-" : Join(labels, ","),
                    a.value("archived", false) ? "yes" : "", Str(a, "created_at")});
  }
  std::cout << RenderTable({"NAME", "VERSION", "TYPE", "CONTENT", "LABELS", "ARCHIVED", "CREATED"},
                           rows);
  return 0;
}

void PrintMap(const json& a, const char* key, const char* title) {
  const json m = a.value(key, json::object());
  if (!m.is_object() || m.empty()) return;
  std::vector<std::string> parts;
  for (const auto& [k, v] : m.items())
    parts.push_back(k + "=" + (v.is_string() ? v.get<std::string>() : v.dump()));
  std::cout << "  " << title << Join(parts, ", ") << "\n";
}

int Show(Session& s, const Noun& n, const Options& o, const std::string& output) {
  auto a = s.GetJson(ShowPath(n, o));
  if (!a.ok()) return Fail(a.status());
  if (output == "json") {
    PrintJson(*a);
    return 0;
  }
  const json st = a->value("storage", json::object());
  std::cout << n.title << " " << Str(*a, "name") << ":" << Str(*a, "version")
            << (a->value("archived", false) ? " (archived)" : "") << "\n"
            << "  type         " << Str(*a, "type") << "\n"
            << "  reference    " << Str(*a, "id") << "\n"
            << "  source       " << Str(*a, "source") << "\n";
  if (st.contains("snapshot_id")) {
    std::cout << "  content      " << Where(*a) << ", kept by the workspace (snapshot "
              << Str(st, "snapshot_id") << ")\n";
    if (!Str(st, "file").empty()) std::cout << "  file         " << Str(st, "file") << "\n";
  } else {
    std::cout << "  content      " << Str(st, "uri") << " (read where it is)\n";
  }
  std::vector<std::string> labels = a->value("labels", std::vector<std::string>{});
  if (!labels.empty()) std::cout << "  labels       " << Join(labels, ", ") << "\n";
  if (!Str(*a, "description").empty())
    std::cout << "  description  " << Str(*a, "description") << "\n";
  PrintMap(*a, "tags", "tags         ");
  PrintMap(*a, "properties", "properties   ");
  std::cout << "  created      " << Str(*a, "created_at") << "\n";
  if (a->contains("lineage")) {
    const json& l = (*a)["lineage"];
    std::cout << "  lineage\n"
              << "    run          " << Str(l, "run") << " (" << Str(l, "run_status")
              << ", experiment " << Str(l, "experiment") << ")\n"
              << "    code         snapshot " << Str(l, "code_snapshot") << "\n"
              << "    environment  " << Str(l, "environment") << " (" << Str(l, "image") << ")\n";
    const json ins = l.value("inputs", json::object());
    for (const auto& [k, v] : ins.items()) {
      const std::string what =
          v.is_object() ? (v.contains("path") ? Str(v, "path") : Str(v, "value")) : v.dump();
      std::cout << "    input        " << k << " = " << what << "\n";
    }
  }
  return 0;
}

int SetArchived(Session& s, const Noun& n, const Options& o, bool archived) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto done =
      (*http)->PostJson(VersionPath(n, o) + (archived ? "/archive" : "/restore"), json::object());
  if (!done.ok()) return Fail(done.status());
  std::cout << (archived ? "Archived " : "Restored ") << Str(*done, "name") << ":"
            << Str(*done, "version") << "\n";
  return 0;
}

int Label(Session& s, const Noun& n, const Options& o) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto done = (*http)->PostJson(VersionPath(n, o) + "/labels", json{{"label", o.label}});
  if (!done.ok()) return Fail(done.status());
  std::cout << "Label " << o.label << " now names " << Str(*done, "name") << ":"
            << Str(*done, "version") << "\n";
  return 0;
}

// Writes a stored model's files under `dest`, each checked against its digest; `base` is where
// its snapshot and objects are served (the workspace's routes, or its registry's).
Status DownloadFiles(HttpClient& http, const std::string& base, const json& model,
                     const fs::path& dest) {
  const json st = model.value("storage", json::object());
  const std::string id = Str(st, "snapshot_id");
  if (id.empty()) return FailedPrecondition("the model is not kept by the workspace");
  if (!IsSha256Hex(id)) return Internal("the daemon sent a malformed snapshot id");
  TY_ASSIGN_OR_RETURN(json m, http.GetJson(base + "/snapshots/" + id));
  TY_ASSIGN_OR_RETURN(cas::Manifest manifest, cas::Manifest::FromJson(m.dump()));
  if (manifest.Id() != id) return Internal("the manifest sent for snapshot " + id + " is another");
  std::error_code ec;
  if (fs::exists(dest, ec) && !fs::is_empty(dest, ec)) {
    return FailedPrecondition(dest.string() + " exists and is not empty; remove it or give " +
                              "another --download-path");
  }
  fs::create_directories(dest, ec);
  if (ec) return Internal("cannot create " + dest.string() + ": " + ec.message());
  for (const cas::ManifestEntry& e : manifest.entries) {
    const fs::path target = dest / e.path;  // the manifest's paths are relative, without ".."
    fs::create_directories(target.parent_path(), ec);
    if (e.type == cas::ManifestEntry::Type::kSymlink) {
      fs::create_symlink(e.link_target, target, ec);
      if (ec) return Internal("cannot create " + target.string() + ": " + ec.message());
      continue;
    }
    TY_ASSIGN_OR_RETURN(HttpResult r, http.Download(base + "/objects/" + e.digest, target, {},
                                                    /*durable=*/false));
    if (Status bad = StatusFromHttpResult(r); !bad.ok()) return bad.WithPrefix(e.path);
    TY_ASSIGN_OR_RETURN(std::string digest, Sha256File(target));
    if (digest != e.digest || fs::file_size(target, ec) != e.size) {
      fs::remove(target, ec);
      return Internal(e.path + ": the bytes received do not match the digest " + e.digest);
    }
    fs::permissions(target, e.mode == 0755 ? fs::perms(0755) : fs::perms(0644), ec);
  }
  return Status::Ok();
}

int Download(Session& s, const Noun& n, const Options& o) {
  auto model = s.GetJson(ShowPath(n, o));
  if (!model.ok()) return Fail(model.status());
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  // The folder is named as asked (the answer's name is the same, and a name is never a path).
  const fs::path dest = fs::path(o.download_path) / o.name;
  if (Status st = DownloadFiles(**http, ApiBase(o.registry), *model, dest); !st.ok()) {
    return Fail(st);
  }
  std::cout << "Downloaded " << Str(*model, "name") << ":" << Str(*model, "version") << " ("
            << Where(*model) << ", every file checked against its digest) to " << dest.string()
            << "\n";
  return 0;
}

void AddNoun(CommandLine& cl, const Noun& n, const char* help) {
  auto o = std::make_shared<Options>();
  auto* noun = cl.app.add_subcommand(n.kind, help);
  noun->require_subcommand(1);
  const bool model = n.kind == std::string("model");

  auto* create = noun->add_subcommand(
      "create", model ? "Register a model: the next version, or --version"
                      : "Register a data asset: the next version, or --version");
  create->add_option("--name,-n", o->name, "Name")->required();
  create->add_option("--registry", o->registry, "Of this registry, not the workspace");
  create->add_option("--version,-v", o->version, "Version (default: the next whole number)");
  create->add_option(
      "--type,-t", o->type,
      model ? "custom_model (default) or mlflow_model" : "uri_folder (default) or uri_file");
  create
      ->add_option("--path,-p", o->path,
                   model ? "A local file or folder, a run's output "
                           "(azureml://jobs/<run>/outputs/artifacts/paths/<p>, runs:/<run>/<p>) "
                           "or a datastore path or URL"
                         : "A local file or folder (stored content-addressed), or a datastore "
                           "path or URL (read where it is)")
      ->required();
  create->add_option("--description,-d", o->description, "Description");
  create->add_option("--tag", o->tags, "KEY=VALUE (repeatable)");
  create->add_option("--label", o->label, "A label to set on the new version (e.g. production)");
  if (model) create->add_option("--run", o->run, "The run the model comes from (lineage)");
  cl.AddOutput(create);
  cl.Then(create, [o, n, &cl](Session& s) { return Create(s, n, *o, cl.output); });

  auto* list =
      noun->add_subcommand("list", "The latest version of each, or every version of --name");
  list->add_option("--name,-n", o->name, "Every version of this name");
  list->add_option("--registry", o->registry, "Of this registry, not the workspace");
  list->add_flag("--include-archived", o->archived, "Archived versions too");
  cl.AddOutput(list);
  cl.Then(list, [o, n, &cl](Session& s) { return List(s, n, *o, cl.output); });

  auto* show = noun->add_subcommand("show", "One version (default: the latest), with lineage");
  show->add_option("--name,-n", o->name, "Name")->required();
  show->add_option("--registry", o->registry, "Of this registry, not the workspace");
  show->add_option("--version,-v", o->version, "Version");
  show->add_option("--label,-l", o->label, "The version this label names (latest: the newest)");
  cl.AddOutput(show);
  cl.Then(show, [o, n, &cl](Session& s) { return Show(s, n, *o, cl.output); });

  for (const bool archive : {true, false}) {
    auto* sub = noun->add_subcommand(archive ? "archive" : "restore",
                                     archive ? "Hide a version from list and latest (still "
                                               "usable as name:version)"
                                             : "Restore an archived version");
    sub->add_option("--name,-n", o->name, "Name")->required();
    sub->add_option("--registry", o->registry, "Of this registry, not the workspace");
    sub->add_option("--version,-v", o->version, "Version")->required();
    cl.Then(sub, [o, n, archive](Session& s) { return SetArchived(s, n, *o, archive); });
  }

  auto* label = noun->add_subcommand("label", "Point a label at a version");
  label->add_option("--name,-n", o->name, "Name")->required();
  label->add_option("--registry", o->registry, "Of this registry, not the workspace");
  label->add_option("--version,-v", o->version, "Version")->required();
  label->add_option("--label,-l", o->label, "Label (e.g. production)")->required();
  cl.Then(label, [o, n](Session& s) { return Label(s, n, *o); });

  if (model) {
    auto* dl = noun->add_subcommand("download",
                                    "Write a model's files, checked against their "
                                    "digests, to DOWNLOAD_PATH/<name>");
    dl->add_option("--name,-n", o->name, "Name")->required();
    dl->add_option("--registry", o->registry, "Of this registry, not the workspace");
    dl->add_option("--version,-v", o->version, "Version (default: the latest)");
    dl->add_option("--label,-l", o->label, "The version this label names");
    dl->add_option("--download-path,-p", o->download_path, "Folder (default: .)");
    cl.Then(dl, [o, n](Session& s) { return Download(s, n, *o); });
  }
}

}  // namespace

void AddAssetCommands(CommandLine& cl) {
  AddNoun(cl, kData, "Register and inspect data assets (docs/data.md)");
  AddNoun(cl, kModel, "Register, inspect and download models (docs/data.md)");
}

}  // namespace trainyard::cli
