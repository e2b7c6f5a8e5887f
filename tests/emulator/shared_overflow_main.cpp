// tests/emulator/shared_overflow_main.cpp: simt-shared-overflow, runs one kernel that overflows its
// shared memory (argument: dynamic | static). Built with -DMRA_SANITIZE=ON only; the CTest checks
// expect AddressSanitizer (dynamic, heap-backed) or UBSan bounds (static) to report it.
#include "simt/simt.h"

#include <cstring>

cudaError_t run_dynamic_shared_overflow(int* out);
cudaError_t run_static_shared_overflow(int* out);

int main(int argc, char** argv) {
  int out[64] = {};
  if (argc < 2) return 2;
  const cudaError_t rc =
      std::strcmp(argv[1], "dynamic") == 0 ? run_dynamic_shared_overflow(out) : run_static_shared_overflow(out);
  // Reaching this point means the overflow went unreported.
  return rc == cudaSuccess ? 0 : 1;
}
