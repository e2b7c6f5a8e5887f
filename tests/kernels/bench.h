// tests/kernels/bench.h: the timing runs of the GPU kit, called by its `bench` (bench_cuda.cpp), `stages`
// (stages_cuda.cpp) and `autotune` (autotune_cuda.cpp) modes (gpu_kit.cpp), and the timing helpers they share.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dispatch.h"
#include "mra.h"

namespace mra::test {

// Median time (ms) of 21 calls of `call` (returning an mra_status), after 3 untimed ones, with CUDA events around
// each; negative when a call or its synchronisation failed. `timed`, when given, runs after each of the 21 once it
// has finished (to read the events the call recorded itself).
double time_calls(const std::function<mra_status()>& call, const std::function<void()>& timed = {});

// The median of `times` (not empty), which it reorders.
float median(std::vector<float>& times);

// The problem every timing of the kit runs for configuration e: B = 1, `heads` heads, Nq = Nk = n, mode full,
// budgets of docs/semantics.md §2.8 with 4 blocks per row.
mra_problem bench_problem(const mra::detail::ConfigInfo& e, int64_t n, int64_t heads);

// The dense comparison of p: exact attention by the fused kernel of the (32, 1) configuration of the same head dim
// and dtype with every 32x32 block refined (mode sparse, budget = all pairs).
mra_problem dense_problem(const mra_problem& p);

// The built configuration (registry.inc as MRA_KERNELS filtered it) named `name`, or nullptr.
const mra::detail::ConfigInfo* built_config(const char* name);

// Times every built configuration against dense exact attention at B = 1, `heads` heads, N = `n` (forward, and
// backward where the configuration has it) and prints the table. 0 when every timing ran, 1 when one failed, 2
// without a CUDA device.
int bench(int64_t n, int64_t heads);

// The per-stage forward timings of mra_fwd_r32x1_d64_bf16 at H = 16 and each N of `ns`, MRA and exact attention,
// beside the estimates of tools/perf-model read from `model` (empty: perf-model.tsv next to the executable), and
// the table (stages_cuda.cpp). `plan`: the same tables, nothing measured, no GPU needed. 0 when every timing ran, 1
// when one failed, 2 without a CUDA device (unless `plan`), without that configuration or without a readable model.
int stages(const std::vector<int64_t>& ns, const std::string& model, bool plan);

// Times the tuning candidates built into the kit (codegen/autotune.toml) against their configurations' current
// tuning, prints the table and writes the winners, those faster by more than the noise margin, to `winners` as
// [name."<configuration>"] tables for codegen/apply_tuning.py (autotune_cuda.cpp). 0 when it ran (winners or
// not), 1 when a timing of the current tuning failed or the file cannot be written, 2 without a CUDA device or
// without candidates.
int autotune(int64_t n, int64_t heads, const char* winners);

// Prints the tuning candidates built in, one per line: entry (configuration): changes (the `list` mode).
void list_candidates();

}  // namespace mra::test
