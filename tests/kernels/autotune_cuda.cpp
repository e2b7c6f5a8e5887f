// tests/kernels/autotune_cuda.cpp: the `autotune` mode of the GPU kit (gpu_kit.cpp): times the tuning candidates of
// codegen/autotune.toml against their configurations' current tuning and writes the winners for codegen/tuning.toml.
//   mra-gpu-kit autotune [N] [heads] [--out FILE]     (defaults 8192, 16, mra-autotune.toml)
//
// The candidates are compiled into the kit: `codegen/generate.py --variants` renders each as a forward-only kernel
// file with an entry of its own (mra_tune_..., autotune.inc lists them; tests/kernels/CMakeLists.txt builds them
// into the kit only). Per configuration with candidates, on the problem of the `bench` mode (B = 1, mode full, 4
// blocks per row) with random q, k, v: the current tuning (the configuration's own kernels), each candidate, the
// current tuning again, each timed by bench.h's time_calls (CUDA events, 3 warm-ups, median of 21). Every candidate
// runs through the library's own dispatch (mra::detail::run: the same checks, layout and launches), with its entry
// in its configuration's slot. Its output must match the current tuning's (same selection; only the summation
// order of the exact part differs), or it is reported wrong; one that fails to launch (too much shared memory, too
// many registers) is reported failed; neither is ever a winner. A winner is the fastest candidate that beats the
// better of the two runs of the current tuning by more than 3 % (autotune_report.h); the winners file holds one
// [name."<configuration>"] table per winner with the candidate's keys, under a `# autotune` line giving the times,
// N, heads and the GPU (codegen/apply_tuning.py merges it into codegen/tuning.toml).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "autotune_report.h"
#include "bench.h"
#include "common/check.h"
#include "common/inputs.h"
#include "common/storage.h"
#include "dispatch.h"

#define MRA_TUNE_VARIANT(entry, config, changes)             \
  extern "C" mra_status entry(const mra::kern::KernelArgs*); \
  extern "C" mra_status config(const mra::kern::KernelArgs*);
#include "autotune.inc"
#undef MRA_TUNE_VARIANT

namespace {

// The inputs' seed ("autotune"), printed with a wrong result so that it can be reproduced.
constexpr uint64_t kSeed = 0x6175746f74756e65ull;

struct Candidate {
  const char* name;     // its entry: mra_tune_<configuration>_<k>
  const char* config;   // the configuration it is a candidate of
  const char* changes;  // its tuning keys, "key = value, key = value" (what a winner writes)
  mra::kern::EntryFn entry, base;  // its entry and the configuration's own
};

const std::vector<Candidate> kCandidates = {
#define MRA_TUNE_VARIANT(entry, config, changes) {#entry, #config, changes, &entry, &config},
#include "autotune.inc"
#undef MRA_TUNE_VARIANT
};

// Device buffers of one configuration's problem: q, k, v with random values, out, the workspace.
struct Buffers {
  void* t[4] = {};  // q, k, v, out
  void* ws = nullptr;
  size_t ws_bytes = 0, bytes = 0;
  ~Buffers() {
    for (void* x : t) cudaFree(x);
    cudaFree(ws);
  }
};

// p's forward with `entry` in the slot of p's configuration: run() calls entries[find_config(p)] and no other.
struct Runner {
  std::vector<mra::kern::EntryFn> table;
  Runner(const mra_problem& p, mra::kern::EntryFn entry)
      : table(size_t(std::max(mra::detail::find_config(p), 0)) + 1, entry) {}
  mra_status operator()(const mra_problem& p, const Buffers& b) const {
    return mra::detail::run(table.data(), &p, b.t[0], b.t[1], b.t[2], nullptr, nullptr, b.t[3], b.ws, b.ws_bytes,
                            nullptr, mra::kern::kStageAll);
  }
};

// The output of the last call, as f32.
std::vector<float> output(const mra_problem& p, const Buffers& b) {
  std::vector<unsigned char> bytes(b.bytes);
  if (cudaMemcpy(bytes.data(), b.t[3], b.bytes, cudaMemcpyDeviceToHost) != cudaSuccess) return {};
  return mra::test::from_storage(bytes.data(), p.dtype, b.bytes / mra::test::elem_size(p.dtype));
}

// The median time of p's forward with `entry`, or why it has none.
mra::test::CandidateTiming time_entry(const mra_problem& p, const Buffers& b, mra::kern::EntryFn entry) {
  const Runner run(p, entry);
  mra::test::CandidateTiming r;
  r.ms = mra::test::time_calls([&] { return run(p, b); });
  if (r.ms < 0) {
    const cudaError_t e = cudaGetLastError();
    r.why = std::string("failed: ") + mra_status_string(run(p, b)) + " (" + cudaGetErrorString(e) + ")";
  }
  return r;
}

}  // namespace

void mra::test::list_candidates() {
  std::printf("autotune candidates: %zu\n", kCandidates.size());
  for (const Candidate& c : kCandidates) std::printf("  %s (%s): %s\n", c.name, c.config, c.changes);
}

int mra::test::autotune(int64_t n, int64_t heads, const char* winners_path) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "mra-gpu-kit autotune: no CUDA device\n");
    return 2;
  }
  if (kCandidates.empty()) {
    std::fprintf(stderr, "mra-gpu-kit autotune: no tuning candidates built in (codegen/autotune.toml names none of "
                         "this build's configurations, or generate.py --variants failed when it was configured)\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const std::string gpu = prop.name, where = gpu + ", N = " + std::to_string(n) + ", heads = " + std::to_string(heads);
  std::vector<mra::test::SweepTiming> sweeps;
  mra::test::Rng rng(kSeed);
  for (size_t first = 0; first < kCandidates.size();) {
    size_t last = first;
    while (last < kCandidates.size() && std::string(kCandidates[last].config) == kCandidates[first].config) ++last;
    mra::test::SweepTiming& sweep = sweeps.emplace_back();
    sweep.config = kCandidates[first].config;
    const mra::detail::ConfigInfo* e = mra::test::built_config(kCandidates[first].config);
    const mra_problem p = mra::test::bench_problem(*e, n, heads);
    Buffers b;
    b.bytes = size_t(heads * n * e->dim) * mra::test::elem_size(p.dtype);
    bool ok = mra_workspace_size(&p, &b.ws_bytes) == MRA_SUCCESS && cudaMalloc(&b.ws, b.ws_bytes) == cudaSuccess;
    for (int i = 0; i < 4; ++i) ok = ok && cudaMalloc(&b.t[i], b.bytes) == cudaSuccess;
    for (int i = 0; i < 3 && ok; ++i) {
      std::vector<float> x = mra::test::noise(rng, 1, heads, n, e->dim);
      const std::vector<unsigned char> stored = mra::test::to_storage(x, p.dtype);
      ok = cudaMemcpy(b.t[i], stored.data(), b.bytes, cudaMemcpyHostToDevice) == cudaSuccess;
    }
    // The current tuning before and after the candidates: the better run is what a candidate must beat, so that a
    // clock that drifts during the sweep does not make a winner.
    const mra::test::CandidateTiming before =
        ok ? time_entry(p, b, kCandidates[first].base) : mra::test::CandidateTiming{"", -1.0, "failed: no device buffers"};
    const std::vector<float> ref = before.ms >= 0 ? output(p, b) : std::vector<float>{};
    for (size_t i = first; i < last; ++i) {
      mra::test::CandidateTiming r =
          !ref.empty() ? time_entry(p, b, kCandidates[i].entry) : mra::test::CandidateTiming{"", -1.0, "not run"};
      if (r.ms >= 0) {
        // Same selection, only the exact part's summation order differs: a few units of the storage type's roundoff.
        const double tol = p.dtype == MRA_DTYPE_F32 ? 0x1.0p-16 : 4 * mra::test::unit_roundoff(p.dtype);
        const std::vector<float> got = output(p, b);
        if (got.size() != ref.size()) {
          r.why = "failed: its output could not be read back";
        } else {
          const mra::test::Comparison c = mra::test::compare(got.data(), ref.data(), int64_t(ref.size()), tol, tol,
                                                             {1, heads, n, e->dim});
          if (!c.ok) r.why = "wrong result: " + c.report + " (inputs: seed " + std::to_string(kSeed) + ")";
        }
      }
      r.changes = kCandidates[i].changes;
      sweep.candidates.push_back(r);
    }
    const mra::test::CandidateTiming after =
        !ref.empty() ? time_entry(p, b, kCandidates[first].base) : mra::test::CandidateTiming{"", -1.0, "not run"};
    sweep.before = before.ms;
    sweep.after = after.ms;
    sweep.why = before.ms < 0 ? before.why : after.why;
    std::printf("%s: %zu candidates timed\n", sweep.config.c_str(), last - first);
    std::fflush(stdout);
    first = last;
  }
  std::printf("\nTuning candidates against the current tuning (%s, sm_%d%d), B = 1, H = %lld, N = %lld, forward, "
              "median of 21 (ms); a winner is faster than the better current run by more than %.0f %%:\n",
              gpu.c_str(), prop.major, prop.minor, (long long)heads, (long long)n, 100 * mra::test::kAutotuneMargin);
  std::printf("| configuration | candidate | ms | vs current |\n|---|---|---|---|\n");
  int failures = 0, winners = 0;
  for (const mra::test::SweepTiming& s : sweeps) {
    for (const std::string& row : mra::test::autotune_rows(s)) std::printf("%s\n", row.c_str());
    failures += s.before < 0 || s.after < 0;
    winners += mra::test::autotune_winner(s) >= 0;
  }
  const std::string text = mra::test::autotune_winners(sweeps, where);
  const std::string part = std::string(winners_path) + ".part";
  FILE* f = std::fopen(part.c_str(), "w");
  const bool written = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (!f || std::fclose(f) != 0 || !written || std::rename(part.c_str(), winners_path) != 0) {
    std::fprintf(stderr, "mra-gpu-kit autotune: cannot write %s\n", winners_path);
    std::remove(part.c_str());
    return 1;
  }
  std::printf("\nmra-gpu-kit autotune: %d winners written to %s\n", winners, winners_path);
  return failures ? 1 : 0;
}
