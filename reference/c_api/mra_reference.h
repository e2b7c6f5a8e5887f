/* reference/c_api/mra_reference.h: a C interface to the reference implementation (reference/mra/reference.h),
 * for callers that cannot use C++: the Python package (tools/python) loads it from libmra_reference.so.
 *
 * Tensors are float32, by default contiguous row-major: q [B, H, Nq, D], k and v [B, Hkv, Nk, D] (Hkv = heads_kv,
 * or H when it is 0), out [B, H, Nq, D]; the *_strides fields give other element strides (docs/semantics.md §8,
 * all zero = contiguous). Masks are
 * uint8 [B, Nq] and [B, Nk] (0 = padding, any other byte = real token, as in runtime/mra.h) or NULL (every token
 * real). Semantics:
 * docs/semantics.md. Every function returns 0 on success; otherwise nonzero, with a one-line description of what
 * is wrong written (NUL-terminated, cut to fit) into `error` when it is not NULL, and `out` is left untouched.
 */
#ifndef MRA_REFERENCE_C_API_H
#define MRA_REFERENCE_C_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mra_reference_status {
  MRA_REFERENCE_SUCCESS = 0,
  MRA_REFERENCE_INVALID = 1,       /* a bad shape, configuration, mask value or pointer: see `error` */
  MRA_REFERENCE_OUT_OF_MEMORY = 2  /* the reference could not allocate its working memory */
} mra_reference_status;

/* One problem and its MRA configuration. `scales` has `levels` entries (s_1 > ... > s_L = 1, any L >= 2);
 * `budgets` has levels - 1 entries (blocks refined per batch and head at each step, or per block row under
 * policy row). A zero-initialized field past `prior_diagonal` keeps the behaviour from before it existed. */
typedef struct mra_reference_problem {
  int64_t batch, heads, nq, nk, dim;
  double scale;             /* logit scale; 0 selects 1/sqrt(dim) */
  int32_t levels;
  const int64_t* scales;
  const int64_t* budgets;
  int32_t sparse;           /* 0: mode full (MRA-L), 1: mode sparse (MRA-L-s) */
  int64_t prior_first, prior_diagonal;
  /* Appended fields (§8): zero keeps the behaviour of a problem written before them. */
  int64_t heads_kv;         /* K/V heads, dividing heads; 0 = heads. Query head h reads K/V head h / (heads / heads_kv) */
  int64_t q_strides[4], k_strides[4], v_strides[4], out_strides[4]; /* element strides [B, H, N, D]; 0s: contiguous */
  int32_t causal;           /* 0: off; 1: query i sees key j only when j <= i + (nk - nq) (docs/semantics.md §9) */
  int32_t policy;           /* 0: global budgets per (batch, head); 1: row, budgets per block row (§10); causal
                               attention needs 1 */
  int32_t selection;        /* 0: a selection per query head; 1: one per group of query heads sharing a K/V head,
                               ranked by the group's mean query (docs/semantics.md §8.4) */
} mra_reference_problem;

/* MRA attention (select, then attend). */
mra_reference_status mra_reference_attend(const mra_reference_problem* problem, const float* q, const float* k,
                                          const float* v, const uint8_t* query_mask, const uint8_t* key_mask,
                                          float* out, char* error, size_t error_size);

/* Exact softmax attention; the configuration fields of `problem` (levels .. prior_diagonal) are not read. */
mra_reference_status mra_reference_exact(const mra_reference_problem* problem, const float* q, const float* k,
                                         const float* v, const uint8_t* query_mask, const uint8_t* key_mask,
                                         float* out, char* error, size_t error_size);

/* The budgets of the `blocks_per_row` setting (as mra-ref --blocks-per-row): `budgets` receives levels - 1
 * entries. */
mra_reference_status mra_reference_budgets(const int64_t* scales, int32_t levels, int64_t nq, int64_t nk,
                                           int64_t blocks_per_row, int64_t* budgets, char* error,
                                           size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* MRA_REFERENCE_C_API_H */
