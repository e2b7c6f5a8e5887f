// tests/kernels/main_cuda.cpp: the main of test_kernels_cuda (CTest test kernels.cuda). Without a CUDA device
// it exits with 77, CTest's SKIP_RETURN_CODE for this test, so a machine without a GPU reports the test as
// skipped instead of passing it with nothing checked; with one, doctest runs every case and any mismatch fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "backend.h"

int main(int argc, char** argv) {
  std::string why;
  if (!mra::test::available(&why)) {
    std::fprintf(stderr, "test_kernels_cuda: skipped: %s\n", why.c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
