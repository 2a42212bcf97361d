#pragma once

namespace trainyard::cli {

// Runs the `trainyard` command line. Returns the process exit code: 0 on success, 1 when a
// run failed or an operation was refused, 2 for usage errors, 130 when interrupted.
int Main(int argc, char** argv);

}  // namespace trainyard::cli
