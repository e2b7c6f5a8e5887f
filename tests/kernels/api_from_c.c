/* tests/kernels/api_from_c.c: runtime/mra.h used from C (compiled as C11 into test_api; called by test_api.cpp).
 * Runs a tiny MRA-2 problem through mra_forward_host and returns 0 when every step behaved. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "mra.h"

int mra_test_c_api(void) {
  enum { N = 40, D = 32 };
  mra_problem p = {0};
  p.batch = 1;
  p.heads = 1;
  p.nq = N;
  p.nk = N;
  p.dim = D;
  p.dtype = MRA_DTYPE_F32;
  p.levels = 2;
  p.resolutions[0] = 16;
  p.resolutions[1] = 1;
  p.budgets[0] = 3;
  p.mode = MRA_MODE_FULL;
  size_t bytes = 0;
  if (mra_workspace_size(&p, &bytes) != MRA_SUCCESS || bytes == 0) return 1;
  float* q = aligned_alloc(16, sizeof(float) * N * D);
  float* k = aligned_alloc(16, sizeof(float) * N * D);
  float* v = aligned_alloc(16, sizeof(float) * N * D);
  float* out = aligned_alloc(16, sizeof(float) * N * D);
  void* ws = aligned_alloc(16, (bytes + 15) / 16 * 16);
  int failed = !q || !k || !v || !out || !ws;
  for (int i = 0; !failed && i < N * D; ++i) {
    q[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    k[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    v[i] = (float)((i * 3) % 17) / 17.0f;
  }
  if (!failed) failed = mra_forward_host(&p, q, k, v, NULL, NULL, out, ws, bytes) != MRA_SUCCESS;
  for (int i = 0; !failed && i < N * D; ++i) failed = !(out[i] >= 0.0f && out[i] <= 1.0f);  /* a mean of v */
  if (!failed) failed = mra_forward_host(&p, q, k, v, NULL, NULL, out, ws, bytes - 1) != MRA_ERROR_BAD_ARGUMENT;
  free(q);
  free(k);
  free(v);
  free(out);
  free(ws);
  return failed;
}
