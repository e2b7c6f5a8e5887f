/* runtime/mra.h: the C API of the MRA attention kernels (usable from C and C++).
 *
 * Link with the CMake target mra::runtime (CUDA backend, present when nvcc was found) or mra::runtime_host
 * (the same generated kernels run on host memory through the CUDA-on-CPU emulation in runtime/simt/).
 * Semantics: docs/semantics.md; kernels, tolerances and configurations: docs/kernels.md.
 *
 * Tensors are, by default, contiguous row-major: q [B, H, Nq, D], k and v [B, Hkv, Nk, D], out [B, H, Nq, D]
 * (Hkv = heads_kv, or H when it is 0; query head h reads K/V head h / (H / Hkv)), all of the problem's dtype and
 * 16-byte aligned; `strides` gives any of them other element strides, e.g. [B, N, H, D], read and written in
 * place without copies (docs/semantics.md §8). Masks are uint8 [B, Nq] and [B, Nk] or NULL (every token real).
 * The mask rule, the same for the kernels and the reference (mra::ref): a byte 0 is padding, any other byte
 * is a real token (C's truth, so a bool array or a 0/1 array can be passed as it is). The API cannot read
 * device memory to check more; mra-ref, which reads mask *files*, refuses values other than 0 and 1 there.
 * The caller owns the workspace: mra_workspace_size() says how many bytes a problem needs. Nothing here
 * allocates, prints, exits or synchronizes; errors come back as an mra_status.
 *
 *   size_t bytes; mra_workspace_size(&problem, &bytes);            (allocate `bytes` on the device)
 *   mra_forward(&problem, q, k, v, NULL, NULL, out, workspace, bytes, stream);
 * Training: keep that workspace as it is after mra_forward (it holds the saved state: the selection, the pooled
 * tensors and every query row's softmax stabilizer and denominator), then
 *   size_t gbytes; mra_backward_workspace_size(&problem, &gbytes);  (a second buffer)
 *   mra_backward(&problem, q, k, v, NULL, NULL, out, dout, dq, dk, dv, workspace, bytes, gworkspace, gbytes, stream);
 */
#ifndef MRA_RUNTIME_MRA_H
#define MRA_RUNTIME_MRA_H

#include <stddef.h>
#include <stdint.h>

/* The CUDA runtime spells the stream type exactly like this, so the two declarations agree. */
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

#ifdef __cplusplus
extern "C" {
#endif

/* Most resolution levels a problem may have (s_1 > ... > s_L = 1). */
#define MRA_MAX_LEVELS 4

typedef enum mra_status {
  MRA_SUCCESS = 0,
  MRA_ERROR_BAD_ARGUMENT = 1,      /* a null or misaligned pointer, a workspace that is too small, a stride
                                      breaking a rule of mra_strides, an output overlapping an input */
  MRA_ERROR_BAD_SHAPE = 2,         /* sizes that are zero, negative or beyond the kernels' index range,
                                      heads_kv not dividing heads */
  MRA_ERROR_UNSUPPORTED_CONFIG = 3, /* no generated configuration for (resolutions, dim, dtype) */
  MRA_ERROR_LAUNCH_FAILED = 4      /* the CUDA runtime (or its emulation) refused a launch: see
                                      mra_last_cuda_error() for its cudaError_t */
} mra_status;

typedef enum mra_dtype { MRA_DTYPE_F32 = 0, MRA_DTYPE_F16 = 1, MRA_DTYPE_BF16 = 2 } mra_dtype;

/* How each level's budget is spent (docs/semantics.md §10). */
typedef enum mra_policy {
  MRA_POLICY_GLOBAL = 0, /* the best budget_l blocks of each (batch, head) */
  MRA_POLICY_ROW = 1     /* every block row of a level refines its own best budget_l blocks */
} mra_policy;

/* Whose queries choose the refined blocks when K/V heads are grouped (docs/semantics.md §8.4). The default is per
 * head: each head's selection adapts to its own queries, and a GQA problem then equals its copied-heads problem
 * exactly; the group's shared selection does H_kv selections instead of H, at the price of a selection made for the
 * group's mean query rather than for each head. */
typedef enum mra_selection {
  MRA_SELECTION_HEAD = 0, /* every (batch, query head) selects its own blocks */
  MRA_SELECTION_GROUP = 1 /* one selection per (batch, K/V head), by the mean of its query heads' queries, shared
                             by them; budgets per group (per block row of the group under MRA_POLICY_ROW) */
} mra_selection;

typedef enum mra_mode {
  MRA_MODE_FULL = 0,   /* MRA-L: coarse components contribute exp(pooled logit) * pooled V */
  MRA_MODE_SPARSE = 1  /* MRA-L-s: only the exact entries inside refined blocks contribute */
} mra_mode;

/* Element strides of q, k, v and out, each per dimension of its logical [B, H, N, D] shape (for k and v, H is
 * heads_kv); all four zero means contiguous. Otherwise (docs/semantics.md §8): the D stride is 1, the others are
 * non-negative multiples of 16 bytes (4 elements for f32, 8 for f16 and bf16), out's elements are distinct and
 * out shares no memory with q, k or v; else MRA_ERROR_BAD_ARGUMENT. FlashAttention's [B, N, H, D]:
 * {N*H*D, D, H*D, 1}. */
typedef struct mra_strides {
  int64_t q[4], k[4], v[4], out[4];
} mra_strides;

/* One attention problem and its MRA configuration (docs/semantics.md §0, §2, §8). Fields are only ever appended,
 * and zero keeps the behaviour from before them, so a zero-initialised problem stays valid. */
typedef struct mra_problem {
  int64_t batch, heads, nq, nk, dim;
  mra_dtype dtype;
  int32_t levels;                           /* L >= 2 */
  int64_t resolutions[MRA_MAX_LEVELS];      /* s_1 > ... > s_L = 1; entries past L are ignored */
  int64_t budgets[MRA_MAX_LEVELS - 1];      /* budget_l, l = 1 .. L-1: blocks refined per (batch, head), or per
                                               block row under MRA_POLICY_ROW */
  mra_mode mode;
  int64_t prior_first;                      /* f: the first f block rows and columns are preferred */
  int64_t prior_diagonal;                   /* g: blocks with |r - c| <= g/2 are preferred */
  double scale;                             /* logit scale; 0 selects 1/sqrt(dim) */
  int64_t heads_kv;                         /* K/V heads, dividing heads (else MRA_ERROR_BAD_SHAPE); 0 = heads */
  mra_strides strides;                      /* element strides; all zero: contiguous */
  /* Appended fields: zero keeps the behaviour of a problem written before them. */
  int32_t causal;                           /* 1: query i sees key j only when j <= i + nk - nq (§9); needs
                                               MRA_POLICY_ROW (else MRA_ERROR_BAD_ARGUMENT); the backward
                                               takes it too (§9.7) */
  mra_policy policy;                        /* MRA_POLICY_GLOBAL (0) or MRA_POLICY_ROW */
  mra_selection selection;                  /* MRA_SELECTION_HEAD (0) or MRA_SELECTION_GROUP (§8.4); else
                                               MRA_ERROR_BAD_ARGUMENT */
} mra_problem;

/* A readable name of a status ("success", "bad argument", ...); never NULL. */
const char* mra_status_string(mra_status status);

/* The workspace (bytes) mra_forward and mra_forward_host need for `problem`; checks the problem first. */
mra_status mra_workspace_size(const mra_problem* problem, size_t* bytes);

/* MRA forward on the device: out = MRA attention of (q, k, v). All pointers are device pointers; the
 * kernels are queued on `stream` and nothing waits for them. */
mra_status mra_forward(const mra_problem* problem, const void* q, const void* k, const void* v,
                       const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);

/* The same generated kernels on host memory, run by the CUDA-on-CPU emulation; returns when done. */
mra_status mra_forward_host(const mra_problem* problem, const void* q, const void* k, const void* v,
                            const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                            size_t workspace_bytes);

/* The backward's own workspace (bytes) for `problem`, needed besides the forward's; checks the problem first.
 * Every generated configuration (f32, f16, bf16) has backward kernels; MRA_ERROR_UNSUPPORTED_CONFIG for a
 * configuration that was not generated or built. Causal attention (causal = 1) has its backward (docs/semantics.md
 * §9.7). */
mra_status mra_backward_workspace_size(const mra_problem* problem, size_t* bytes);

/* MRA backward on the device (docs/semantics.md §7): given dout = dL/d(out), writes dq, dk, dv (the problem's
 * dtype, shaped like q, k, v; masked tokens 0), the selection held fixed. f16/bf16: dout and out in that dtype,
 * sums in f32, the exact part on tensor cores with P and dS rounded to the dtype, each gradient rounded to it once
 * (docs/kernels.md, "Backward"). Strides (§8): dout is read with out's
 * strides, and dq, dk, dv are written with the strides of q, k and v (a packed or [B, N, H, D] layout gives
 * gradients in the same layout); their elements must be distinct (so not for a k or v given with a stride 0) and
 * share no byte with each other, q, k, v, out or dout, else MRA_ERROR_BAD_ARGUMENT. Checked as disjoint address
 * ranges, or rows apart modulo a common stride: dq, dk, dv interleaved in one packed [B, N, H + 2 Hkv, D] buffer
 * (FlashAttention's packed QKV layout) are accepted. Grouped K/V heads: dk
 * and dv of a K/V head are the sums over the query heads of its group, in head order. `out` is the output and
 * `forward_workspace` the workspace of an mra_forward of the same problem, inputs and masks, left unchanged since
 * (the saved state: it must live, unmodified, until this backward has run on the stream; the forward's
 * workspace may be reused only after that). `workspace` holds mra_backward_workspace_size() bytes and is
 * scratch. Every pointer is a device pointer, 16-byte aligned; deterministic (no float atomics: the same inputs
 * give the same bits). Queued on `stream`; nothing waits. */
mra_status mra_backward(const mra_problem* problem, const void* q, const void* k, const void* v,
                        const uint8_t* query_mask, const uint8_t* key_mask, const void* out, const void* dout,
                        void* dq, void* dk, void* dv, const void* forward_workspace, size_t forward_workspace_bytes,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream);

/* The same backward kernels on host memory, run by the CUDA-on-CPU emulation after mra_forward_host. */
mra_status mra_backward_host(const mra_problem* problem, const void* q, const void* k, const void* v,
                             const uint8_t* query_mask, const uint8_t* key_mask, const void* out, const void* dout,
                             void* dq, void* dk, void* dv, const void* forward_workspace,
                             size_t forward_workspace_bytes, void* workspace, size_t workspace_bytes);

/* The cudaError_t (as an int, so that this header needs no CUDA header) of the launch that made the calling
 * thread's last mra_forward, mra_backward or their _host forms return MRA_ERROR_LAUNCH_FAILED; 0 (cudaSuccess)
 * when that call returned anything else. Per thread, like the CUDA runtime's own last error; reading it changes nothing. */
int mra_last_cuda_error(void);

/* Launch observer, for profiling (docs/kernels.md, "C API"): once set, every later mra_forward,
 * mra_backward and their _host forms call fn(user, stage, stream) on the calling thread just before each kernel
 * launch they queue, `stage` naming the part of the pipeline the launch belongs to, one of these static strings
 * (in the order they first run; "Ll" names coarse level l, up to the problem's levels - 1; "share" only with
 * MRA_SELECTION_GROUP):
 *   forward:  "pool", "select L1", "select L2", "select L3", "share", "coarse L1", "coarse L2", "coarse L3", "attend"
 *   backward: "bwd: delta", "bwd: coarse L1", "bwd: coarse L2", "bwd: coarse L3", "bwd: exact dq, dk, dv"
 * (the names of tools/perf-model's stages, which models no "share" and may split a stage into parts "name: part";
 * tests/codegen/test_stage_names.py holds the kernels and the model to this list), and `stream` the call's
 * stream (NULL for the _host forms), e.g. to record a CUDA event there at each change of stage. The observer
 * changes nothing the kernels compute; it must not call this library. One observer per copy of the library (a
 * process-wide setting): fn = NULL clears it. A call reads it once when it starts and uses that one throughout,
 * so setting it while calls run on other threads is safe, but `user` must stay valid until every call that may
 * have read it has returned. Unset (the default), a call costs one atomic load more. */
typedef void (*mra_launch_observer)(void* user, const char* stage, cudaStream_t stream);
void mra_set_launch_observer(mra_launch_observer fn, void* user);

#ifdef __cplusplus
}
#endif

#endif /* MRA_RUNTIME_MRA_H */
