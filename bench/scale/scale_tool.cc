// Fills a workspace's store with copies of one finished run (bench/scale.sh): the same record, the
// same transitions and tags, under new names and later times, written through the store's own
// API (not SQL of this tool's), so the rows are exactly what the daemon writes for a run.
//   scale_tool WORKSPACE_DB TEMPLATE_RUN COUNT
// The daemon must not be running (the store is written without it). Prints "runs N" and
// "seconds S".

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "trainyard/store/store.h"

using namespace trainyard;

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "scale_tool: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) Die("usage: scale_tool WORKSPACE_DB TEMPLATE_RUN COUNT");
  char* end = nullptr;
  const long count = std::strtol(argv[3], &end, 10);
  if (*end != '\0' || count < 0) Die(std::string("bad count: ") + argv[3]);
  store::StoreOptions options;
  options.durable_transitions = false;  // filling a bench workspace; the daemon is not running
  auto db = store::OpenSqliteStore(argv[1], options);
  if (!db.ok()) Die(db.status().ToString());
  auto tmpl = (*db)->GetRun(argv[2]);
  if (!tmpl.ok()) Die(tmpl.status().ToString());
  if (!store::IsTerminal(tmpl->status)) Die(std::string("run ") + argv[2] + " has not finished");

  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < count; ++i) {
    store::RunRecord rec = *tmpl;
    rec.id = tmpl->id + "-" + std::to_string(i);
    rec.display_name = rec.id;
    rec.status = store::RunStatus::kNotStarted;
    rec.transitions.clear();
    // Later runs are newer, a millisecond apart, as if submitted one after the other.
    const std::int64_t shift = i + 1;
    rec.created_at = tmpl->created_at + shift;
    if (Status s = (*db)->InsertRun(rec); !s.ok()) Die(s.ToString());
    for (const store::RunTransition& t : tmpl->transitions) {
      if (Status s = (*db)->TransitionRun(rec.id, t.status, t.at + shift); !s.ok())
        Die(s.ToString());
    }
    if (tmpl->exit_code || !tmpl->failure_reason.empty()) {
      store::RunFields fields;
      fields.exit_code = tmpl->exit_code;
      if (!tmpl->failure_reason.empty()) fields.failure_reason = tmpl->failure_reason;
      if (Status s = (*db)->SetRunFields(rec.id, fields); !s.ok()) Die(s.ToString());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("runs %ld\nseconds %.1f\n", count, seconds);
  return 0;
}
