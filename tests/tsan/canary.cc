// A deliberate data race: two threads increment one plain counter. Built only in the `tsan`
// preset, where ThreadSanitizer must report it and end the program with an error; the test
// `tsan_reports_a_data_race` expects exactly that, so a TSan build that has stopped catching
// races (lost flags, a suppression) fails instead of passing quietly.
#include <cstdio>
#include <thread>

namespace {
long counter = 0;  // NOLINT: the race is the point
}

int main() {
  auto bump = [] {
    for (int i = 0; i < 100000; ++i) counter = counter + 1;
  };
  std::thread a(bump), b(bump);
  a.join();
  b.join();
  std::printf("%ld\n", counter);
  return 0;
}
