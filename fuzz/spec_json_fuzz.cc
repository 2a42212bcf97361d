// The JSON readers of the daemon's API: job requests, environment, compute and datastore
// definitions.
#include <nlohmann/json.hpp>

#include "trainyard/spec/compute.h"
#include "trainyard/spec/datastore.h"
#include "trainyard/spec/definition.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  if (auto r = spec::RunRequest::FromJson(j); r.ok()) (void)r->ToJson(spec::SecretMode::kRedact);
  if (auto e = spec::EnvironmentDefinition::FromJson(j); e.ok()) {
    (void)e->ToJson(spec::SecretMode::kRedact);
  }
  if (auto c = spec::ComputeDefinition::FromJson(j); c.ok()) (void)c->Validate();
  if (auto d = spec::DatastoreDefinition::FromJson(j); d.ok()) {
    (void)d->ToJson(spec::SecretMode::kRedact);
    (void)d->Location();
  }
  return 0;
}
