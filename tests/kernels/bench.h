// tests/kernels/bench.h: the timing runs of the GPU kit, called by its `bench` (bench_cuda.cpp) and `autotune`
// (autotune_cuda.cpp) modes (gpu_kit.cpp), and the timing helpers they share.
#pragma once

#include <cstdint>
#include <functional>

#include "dispatch.h"
#include "mra.h"

namespace mra::test {

// Median time (ms) of 21 calls of `call` (returning an mra_status), after 3 untimed ones, with CUDA events around
// each; negative when a call or its synchronisation failed.
double time_calls(const std::function<mra_status()>& call);

// The problem every timing of the kit runs for configuration e: B = 1, `heads` heads, Nq = Nk = n, mode full,
// budgets of docs/semantics.md §2.8 with 4 blocks per row.
mra_problem bench_problem(const mra::detail::ConfigInfo& e, int64_t n, int64_t heads);

// The built configuration (registry.inc as MRA_KERNELS filtered it) named `name`, or nullptr.
const mra::detail::ConfigInfo* built_config(const char* name);

// Times every built configuration against dense exact attention at B = 1, `heads` heads, N = `n` (forward, and
// backward where the configuration has it) and prints the table. 0 when every timing ran, 1 when one failed, 2
// without a CUDA device.
int bench(int64_t n, int64_t heads);

// Times the tuning candidates built into the kit (codegen/autotune.toml) against their configurations' current
// tuning, prints the table and writes the winners, those faster by more than the noise margin, to `winners` as
// [name."<configuration>"] tables for codegen/apply_tuning.py (autotune_cuda.cpp). 0 when it ran (winners or
// not), 1 when a baseline timing failed or the file cannot be written, 2 without a CUDA device or without
// candidates.
int autotune(int64_t n, int64_t heads, const char* winners);

// Prints the tuning candidates built in, one per line: entry (configuration): changes (the `list` mode).
void list_candidates();

}  // namespace mra::test
