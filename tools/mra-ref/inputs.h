// tools/mra-ref/inputs.h: turns mra-ref's options and .npy files into a reference problem and configuration,
// checking everything a user can get wrong (shapes, dtypes, masks, non-finite values, budgets) and reporting
// it as a cli::Failure naming the file or option. Tested through the binary by tests/cli and tests/interop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli.h"
#include "mra/reference.h"
#include "npy.h"

namespace mra::cli {

// Q, K, V and masks as the reference wants them, owning their storage.
struct Inputs {
  std::vector<int64_t> q_shape;  // Q's shape as the file gave it: the output has the same
  std::vector<int64_t> k_shape;  // K's (and V's) shape as the file gave it: dk and dv have the same
  int64_t batch = 1, heads = 1, nq = 0, nk = 0, dim = 0;
  int64_t heads_kv = 1;          // K/V heads: fewer than `heads` (dividing it) is grouped attention (§8)
  bool bnhd = false;             // --layout bnhd: the files are [B, N, H, D] (or [N, H, D])
  std::vector<float> q, k, v;    // [B, H, N, D] (K and V: [B, heads_kv, N, D]), whatever the files' layout
  std::vector<uint8_t> query_mask, key_mask;  // [batch, n] each, or empty when every token is real
  double scale = 0.0;                         // 0: the reference's default 1/sqrt(dim)
  bool causal = false;                        // --causal (docs/semantics.md §9)

  // Points into this object: valid while it lives and is not moved.
  ref::Problem problem() const;
  // A [B, heads, n, D] result in the files' layout (--layout), ready to be written.
  std::vector<float> file_order(const std::vector<float>& x, int64_t heads, int64_t n) const;
};

// The array a file argument names (files.h: FILE.npy, FILE.npz[:NAME], FILE.safetensors[:NAME]), `default_name`
// when no :NAME is given (empty: the container's only array). A failure names the file and the array, as
// `subject` receives them.
npy::Array load_array(const std::string& spec, const std::string& default_name, std::string* subject = nullptr);

// --q --k --v [--mask | --key-mask, --query-mask] or --inputs FILE, [--scale], [--causal], [--layout bhnd|bnhd];
// K and V with fewer heads than Q are grouped K/V heads (docs/semantics.md §8). Refuses inputs whose float32
// intermediates could overflow (docs/errors.md, "Values").
Inputs load_inputs(const Options& options);

// Refuses an output (`flag` OUT, files.h) that is one of the input files (--q, --k, --v, the masks, --inputs,
// --dout) through any name or link: the run would replace what it read, an archive's other arrays included.
// Devices and FIFOs are not files that can be lost, and a new name is no input.
void refuse_output_over_inputs(const Options& options, const std::string& flag, const std::string& out);

// --dout: the upstream gradient of `grad`, a float file shaped like Q, every value finite as a float32.
std::vector<float> load_upstream(const Options& options, const Inputs& in);

// --scales, --budget | --blocks-per-row, --mode, --prior-first, --prior-diagonal, --policy (row by default with
// --causal, which refuses global).
ref::Config load_config(const Options& options, int64_t nq, int64_t nk);

// Writes one float32 array of `shape` as npy::Output does (atomically for a regular file): .npy, or as array
// `out` (or :NAME) of an .npz or safetensors file, by `path`'s extension (files.h); a failure names the file.
void save_f32(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data);

// Writes text as npy::Output does; a failure names the file.
void save_text(const std::string& path, const std::string& text);

// "1<separator>2<separator>3".
std::string join(const std::vector<int64_t>& values, const std::string& separator);

// "[1, 2, 3]", for messages and JSON.
std::string shape_string(const std::vector<int64_t>& shape);

// The multi-index of flat element `flat` in C order of `shape`, as "[i, j, k]".
std::string index_string(const std::vector<int64_t>& shape, size_t flat);

}  // namespace mra::cli
