// reference/c_api/c_api.cpp: the C interface of reference/c_api/mra_reference.h over mra::reference: converts
// the C structures, and turns the reference's exceptions into status codes and one-line messages.
#include "mra_reference.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "mra/reference.h"

namespace {

void set_error(char* error, size_t size, const std::string& text) {
  if (error == nullptr || size == 0) return;
  const size_t n = std::min(text.size(), size - 1);
  std::memcpy(error, text.data(), n);
  error[n] = '\0';
}

// Runs `body`, mapping the reference's errors to a status and a message; nothing escapes into C.
template <class Body>
mra_reference_status guarded(char* error, size_t size, Body&& body) {
  try {
    body();
    set_error(error, size, "");
    return MRA_REFERENCE_SUCCESS;
  } catch (const std::bad_alloc&) {
    set_error(error, size, "out of memory");
    return MRA_REFERENCE_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(error, size, e.what());
    return MRA_REFERENCE_INVALID;
  }
}

std::vector<int64_t> scales_of(const int64_t* scales, int32_t levels) {
  if (levels < 2) throw mra::ref::Error("scales: need at least two resolutions, the last one 1");
  if (scales == nullptr) throw mra::ref::Error("scales must not be null");
  return {scales, scales + levels};
}

mra::ref::Problem problem_of(const mra_reference_problem& c, const float* q, const float* k, const float* v,
                             const uint8_t* query_mask, const uint8_t* key_mask) {
  if (c.causal != 0 && c.causal != 1) throw mra::ref::Error("causal must be 0 or 1, got " + std::to_string(c.causal));
  mra::ref::Problem p = mra::ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, q, k, v, query_mask, key_mask,
                                              c.scale, c.causal == 1);
  p.heads_kv = c.heads_kv;
  const auto strides = [](const int64_t (&s)[4]) { return mra::ref::Strides{s[0], s[1], s[2], s[3]}; };
  p.layout = {strides(c.q_strides), strides(c.k_strides), strides(c.v_strides), strides(c.out_strides)};
  p.validate();
  return p;
}

mra::ref::Config config_of(const mra_reference_problem& c) {
  mra::ref::Config config;
  config.scales = scales_of(c.scales, c.levels);
  if (c.budgets == nullptr) throw mra::ref::Error("budgets must not be null");
  config.budgets.assign(c.budgets, c.budgets + (c.levels - 1));
  config.mode = c.sparse ? mra::ref::Mode::sparse : mra::ref::Mode::full;
  config.prior_first = c.prior_first;
  config.prior_diagonal = c.prior_diagonal;
  if (c.policy != 0 && c.policy != 1) throw mra::ref::Error("policy must be 0 (global) or 1 (row), got " + std::to_string(c.policy));
  config.policy = c.policy == 1 ? mra::ref::Policy::row : mra::ref::Policy::global;
  if (c.selection != 0 && c.selection != 1)
    throw mra::ref::Error("selection must be 0 (per head) or 1 (per group), got " + std::to_string(c.selection));
  config.selection = c.selection == 1 ? mra::ref::Scope::group : mra::ref::Scope::head;
  config.validate();
  return config;
}

void require(bool ok, const char* what) {
  if (!ok) throw mra::ref::Error(what);
}

}  // namespace

extern "C" mra_reference_status mra_reference_attend(const mra_reference_problem* problem, const float* q,
                                                     const float* k, const float* v, const uint8_t* query_mask,
                                                     const uint8_t* key_mask, float* out, char* error,
                                                     size_t error_size) {
  return guarded(error, error_size, [&] {
    require(problem != nullptr && out != nullptr, "problem and out must not be null");
    const mra::ref::Problem p = problem_of(*problem, q, k, v, query_mask, key_mask);
    mra::ref::mra_attention(p, config_of(*problem), out);
  });
}

extern "C" mra_reference_status mra_reference_exact(const mra_reference_problem* problem, const float* q,
                                                    const float* k, const float* v, const uint8_t* query_mask,
                                                    const uint8_t* key_mask, float* out, char* error,
                                                    size_t error_size) {
  return guarded(error, error_size, [&] {
    require(problem != nullptr && out != nullptr, "problem and out must not be null");
    mra::ref::exact_attention(problem_of(*problem, q, k, v, query_mask, key_mask), out);
  });
}

extern "C" mra_reference_status mra_reference_budgets(const int64_t* scales, int32_t levels, int64_t nq, int64_t nk,
                                                      int64_t blocks_per_row, int64_t* budgets, char* error,
                                                      size_t error_size) {
  return guarded(error, error_size, [&] {
    require(budgets != nullptr, "budgets must not be null");
    mra::ref::Config config;
    config.scales = scales_of(scales, levels);
    config.budgets.assign(config.scales.size() - 1, 0);
    config.validate();
    require(nq > 0 && nk > 0, "query and key counts must be positive");
    const std::vector<int64_t> b = mra::ref::budgets_from_blocks_per_row(config.scales, nq, nk, blocks_per_row);
    std::copy(b.begin(), b.end(), budgets);
  });
}
