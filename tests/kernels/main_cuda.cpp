// tests/kernels/main_cuda.cpp: the main of test_kernels_cuda and test_backward_kernels_cuda (CTest tests kernels.cuda,
// backward.cuda). Without a CUDA device
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
    std::fprintf(stderr, "%s: skipped: %s\n", argv[0], why.c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
