// Run tokens and what a run token may reach: a token that verifies names a run, only a run
// token of that run passes AuthorizeRunToken, and the path scope holds for any method and path.
#include <cstdlib>

#include "fuzz/fuzz_util.h"
#include "trainyard/api/run_scope.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/util.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const SecretBox box = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  auto p = fuzz::Parts(data, size, 3);
  const std::string& token = p[0];
  HttpRequest req;
  req.method = p[1].substr(0, 8);
  req.path = p[2];
  const std::string run = box.RunOfToken(token, 1'800'000'000);
  auto scope = api::AuthorizeRunToken(box, token, req, 1'800'000'000);
  if (scope.ok()) {
    if (*scope != run || run.empty()) std::abort();
    if (!StartsWith(req.path, "/api/v1/jobs/" + run + "/")) std::abort();
  }
  // A token minted for a fuzzed run id verifies as that id, and only before its expiry.
  const std::string minted = box.RunToken(p[0], 1'800'000'001);
  if (box.RunOfToken(minted, 1'800'000'000) != p[0] && p[0].find('.') == std::string::npos &&
      !p[0].empty()) {
    std::abort();
  }
  if (!box.RunOfToken(minted, 1'800'000'001).empty()) std::abort();
  (void)api::IsRunFilePath(p[2]);
  return 0;
}
