// Ignore files (.amlignore/.gitignore) and wildmatch, including deep `*` recursion.
#include "fuzz/fuzz_util.h"
#include "trainyard/cas/ignore.h"
#include "trainyard/cas/wildmatch.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto p = fuzz::Parts(data, size, 3);
  cas::IgnoreRules rules;
  rules.AddFile("", p[0], ".gitignore");
  rules.AddFile("sub/", p[1], "sub/.amlignore");
  (void)rules.IsIgnored(p[2], false);
  (void)rules.IsIgnored(p[2], true);
  (void)rules.MatchEntry(p[2], false).Describe();
  (void)cas::WildMatch(p[0], p[2], true);
  (void)cas::WildMatch(p[1], p[2], false);
  return 0;
}
