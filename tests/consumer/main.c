/* tests/consumer/main.c: the consumer program of tests/consumer (vendored sources) and tests/consumer-package
 * (an installed mra): one MRA-2 forward on the emulated backend through the C API; exit status 0 when it ran and
 * the output is sane. `consumer one-config` also checks that a generated configuration left out of the build
 * (MRA_KERNELS = mra_fwd_r32x1_d64_f32) is reported as unsupported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mra.h"

int main(int argc, char** argv) {
  enum { N = 70, D = 64 };
  mra_problem p = {0};
  p.batch = p.heads = 1;
  p.nq = p.nk = N;
  p.dim = D;
  p.dtype = MRA_DTYPE_F32;
  p.levels = 2;
  p.resolutions[0] = 32;
  p.resolutions[1] = 1;
  p.budgets[0] = 4;
  size_t bytes = 0;
  mra_status s = mra_workspace_size(&p, &bytes);
  if (s != MRA_SUCCESS) {
    fprintf(stderr, "consumer: workspace size: %s\n", mra_status_string(s));
    return 1;
  }
  float* qkv = aligned_alloc(16, sizeof(float) * N * D);
  float* out = aligned_alloc(16, sizeof(float) * N * D);
  void* ws = aligned_alloc(16, (bytes + 15) / 16 * 16);
  if (!qkv || !out || !ws) return 1;
  for (int i = 0; i < N * D; ++i) qkv[i] = (float)(i % 7) * 0.25f;
  s = mra_forward_host(&p, qkv, qkv, qkv, NULL, NULL, out, ws, bytes);
  int bad = s != MRA_SUCCESS;
  for (int i = 0; !bad && i < N * D; ++i) bad = !(out[i] >= 0.0f && out[i] <= 1.5f);
  p.dim = 128; /* generated, but not built when MRA_KERNELS names one configuration */
  if (!bad && argc > 1 && strcmp(argv[1], "one-config") == 0)
    bad = mra_workspace_size(&p, &bytes) != MRA_ERROR_UNSUPPORTED_CONFIG;
  printf("consumer: %s\n", bad ? "FAILED" : "ok");
  free(qkv);
  free(out);
  free(ws);
  return bad;
}
