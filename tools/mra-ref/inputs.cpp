// tools/mra-ref/inputs.cpp: loading and checking mra-ref's inputs (see inputs.h). Tested by tests/cli.
#include "inputs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>

#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "npy.h"

namespace mra::cli {
namespace {

std::string number(double x) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  return ec == std::errc() ? std::string(buf, end) : std::string("?");
}

struct Tensor {
  std::string path;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A Q, K or V file: float dtype, rank 2 to 4, no empty dimension, every value finite as a float32.
Tensor load_tensor(const std::string& spec, const std::string& default_name) {
  std::string path;
  npy::Array a = load_array(spec, default_name, &path);
  if (a.kind != npy::Kind::floating)
    throw Failure(path, "dtype '" + a.descr + "' is not supported for Q, K and V (use float16, float32 or float64)");
  if (a.shape.size() < 2 || a.shape.size() > 4)
    throw Failure(path, "shape " + shape_string(a.shape) + " is not [N, D], [H, N, D] or [B, H, N, D]");
  for (int64_t d : a.shape)
    if (d == 0) throw Failure(path, "shape " + shape_string(a.shape) + " has an empty dimension");
  Tensor t{path, a.shape, std::vector<float>(a.values.size())};
  constexpr double kFloatMax = std::numeric_limits<float>::max();
  for (size_t i = 0; i < a.values.size(); ++i) {
    const double x = a.values[i];
    if (!std::isfinite(x))
      throw Failure(path, "non-finite value " + number(x) + " at " + index_string(a.shape, i));
    if (std::fabs(x) > kFloatMax)
      throw Failure(path, "value " + number(x) + " at " + index_string(a.shape, i) + " overflows float32");
    t.data[i] = static_cast<float>(x);
  }
  return t;
}

// Splits a rank-2..4 shape into batch, heads, sequence length and head dimension; `bnhd`: the shape is
// [B, N, H, D] or [N, H, D].
void split_shape(const std::vector<int64_t>& s, bool bnhd, int64_t& batch, int64_t& heads, int64_t& n,
                 int64_t& dim) {
  const size_t r = s.size();
  batch = r == 4 ? s[0] : 1;
  heads = r >= 3 ? s[r - (bnhd ? 2 : 3)] : 1;
  n = s[r - (bnhd ? 3 : 2)];
  dim = s[r - 1];
}

// [B, A, C, D] -> [B, C, A, D]: the swap of the two middle axes, between the layouts [B, N, H, D] and
// [B, H, N, D] in either direction.
std::vector<float> swap_middle(const std::vector<float>& x, int64_t batch, int64_t a, int64_t c, int64_t dim) {
  std::vector<float> out(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < a; ++i)
      for (int64_t j = 0; j < c; ++j)
        std::copy_n(x.begin() + ((b * a + i) * c + j) * dim, dim, out.begin() + ((b * c + j) * a + i) * dim);
  return out;
}

// A mask over `n` tokens, [n] (shared by every batch) or [batch, n], values 0 or 1 in any dtype; returned as
// [batch, n].
std::vector<uint8_t> load_mask(const std::string& spec, const std::string& default_name, int64_t batch, int64_t n) {
  std::string path;
  const npy::Array a = load_array(spec, default_name, &path);
  const bool shared = a.shape.size() == 1 && a.shape[0] == n;
  const bool per_batch = a.shape.size() == 2 && a.shape[0] == batch && a.shape[1] == n;
  if (!shared && !per_batch)
    throw Failure(path, "mask shape " + shape_string(a.shape) + " is not [" + std::to_string(n) + "] or [" +
                            std::to_string(batch) + ", " + std::to_string(n) + "]");
  for (size_t i = 0; i < a.values.size(); ++i) {
    if (a.values[i] != 0.0 && a.values[i] != 1.0)
      throw Failure(path, "mask value " + number(a.values[i]) + " at " + index_string(a.shape, i) + " is not 0 or 1");
  }
  std::vector<uint8_t> mask(static_cast<size_t>(batch * n));
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = a.values[shared ? i % static_cast<size_t>(n) : i] != 0.0;
  return mask;
}

// An option that --inputs FILE may supply: its own value, else FILE's array of the option's name when FILE
// holds one (q, k and v it must hold).
std::optional<std::string> input_spec(const Options& options, const std::string& flag, const std::string& name,
                                      const npy::Listing& bundle) {
  if (const auto given = options.get(flag)) return given;
  const auto inputs = options.get("--inputs");
  if (!inputs) return std::nullopt;
  const files::Spec spec = files::parse_spec(*inputs, "");
  if (!spec.container || !spec.name.empty())
    throw Failure("--inputs", "'" + *inputs + "' is not FILE.npz or FILE.safetensors (holding q, k and v)");
  if (!bundle.ok()) throw Failure(*inputs, bundle.error);
  for (const std::string& n : bundle.names)
    if (n == name) return spec.path + ":" + name;
  if (name == "q" || name == "k" || name == "v") throw Failure(*inputs, "holds no array '" + name + "'");
  return std::nullopt;
}

// The largest Euclidean norm of the rows of a [rows, dim] array, and its row.
std::pair<double, size_t> largest_row(const std::vector<float>& x, int64_t dim) {
  std::pair<double, size_t> best{0.0, 0};
  const size_t d = static_cast<size_t>(dim);
  for (size_t r = 0; r * d < x.size(); ++r) {
    double sum = 0.0;
    for (size_t t = 0; t < d; ++t) sum += double(x[r * d + t]) * double(x[r * d + t]);
    if (std::sqrt(sum) > best.first) best = {std::sqrt(sum), r};
  }
  return best;
}

double largest_value(const std::vector<float>& x) {
  double m = 0.0;
  for (float v : x) m = std::max(m, double(std::fabs(v)));
  return m;
}

// Every backend computes logits, pooled sums and weighted sums of values in float32 (the reference in double,
// but it must agree with them): inputs that could take one of these beyond float32's range are refused up
// front, whichever backend runs, instead of turning into inf - inf = NaN or into a kernel's guarded zeros.
// Bounds (docs/errors.md): max(scale, 1) * max|q_i| * max|k_j| and max(Nq, Nk) * max|x| for x in Q, K, V stay
// within kRangeLimit, a margin of 8 under the largest float32.
void check_range(const Inputs& in, const std::string& q_path, const std::string& k_path, const std::string& v_path,
                 const std::optional<std::string>& scale_text) {
  constexpr double kRangeLimit = 0x1p125;
  const auto number = [](double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", x);
    return std::string(buf);
  };
  const std::string limit = " (limit " + number(kRangeLimit) + ", the float32 range the kernels compute in)";
  const int64_t n = std::max(in.nq, in.nk);
  const std::pair<const std::vector<float>*, const std::string*> tensors[] = {
      {&in.q, &q_path}, {&in.k, &k_path}, {&in.v, &v_path}};
  for (const auto& [x, path] : tensors) {
    const double sum = double(n) * largest_value(*x);
    if (sum > kRangeLimit)
      throw Failure(*path, "sums of up to " + std::to_string(n) + " values reach " + number(sum) + limit);
  }
  const double scale = in.scale != 0.0 ? in.scale : 1.0 / std::sqrt(double(in.dim));
  const auto [qn, qi] = largest_row(in.q, in.dim);
  const auto [kn, ki] = largest_row(in.k, in.dim);
  const double bound = std::max(scale, 1.0) * qn * kn;
  if (bound <= kRangeLimit) return;
  // Row indices as [b, h, n] of the tensors held ([B, H, N, D] whatever the files' layout), at the files' rank.
  const auto rows_of = [&](int64_t heads, int64_t n) {
    const std::vector<int64_t> all{in.batch, heads, n};
    return std::vector<int64_t>(all.end() - int64_t(in.q_shape.size() - 1), all.end());
  };
  const std::vector<int64_t> q_rows = rows_of(in.heads, in.nq), k_rows = rows_of(in.heads_kv, in.nk);
  const std::string rows = " (largest rows: q " + index_string(q_rows, qi) + " of norm " + number(qn) + ", k " +
                           index_string(k_rows, ki) + " of norm " + number(kn) + ")";
  if (scale > 1.0 && qn * kn <= kRangeLimit)
    throw Failure("--scale", "'" + scale_text.value_or("") + "' makes logits reach " + number(bound) + limit + rows);
  throw Failure(q_path, "logits with " + k_path + " reach " + number(bound) + limit + rows);
}

}  // namespace

npy::Array load_array(const std::string& spec_text, const std::string& default_name, std::string* subject) {
  // "-" is standard input (a .npy stream, or a redirected file), which one option can read.
  static bool stdin_taken = false;
  if (spec_text == "-" && std::exchange(stdin_taken, true))
    throw Failure("-", "standard input is already read by another option");
  const files::Spec spec = files::parse_spec(spec_text == "-" ? "/dev/stdin" : spec_text, default_name);
  const std::string named = spec_text == "-"                            ? "stdin"
                            : spec.container && !spec.name.empty() ? spec.path + ":" + spec.name
                                                                       : spec.text;
  if (subject) *subject = named;
  npy::Parsed parsed = files::load(spec);
  if (!parsed.ok()) throw Failure(named, parsed.error);
  return std::move(parsed.array);
}

void refuse_output_over_inputs(const Options& options, const std::string& flag, const std::string& out) {
  struct stat target {};
  if (out == "-" || ::stat(files::parse_spec(out, "out").path.c_str(), &target) != 0 || !S_ISREG(target.st_mode))
    return;
  for (const char* input : {"--q", "--k", "--v", "--mask", "--key-mask", "--query-mask", "--inputs", "--dout"}) {
    const auto given = options.get(input);
    struct stat st {};
    const bool found = given && (*given == "-" ? ::fstat(STDIN_FILENO, &st)
                                               : ::stat(files::parse_spec(*given, "").path.c_str(), &st)) == 0;
    if (found && st.st_dev == target.st_dev && st.st_ino == target.st_ino)
      throw Failure(flag, "'" + out + "' is the file " + input + " reads ('" + *given +
                              "'): the output would replace an input; write it elsewhere");
  }
}

ref::Problem Inputs::problem() const {
  ref::Problem p = ref::Problem::of(batch, heads, nq, nk, dim, q.data(), k.data(), v.data(),
                                    query_mask.empty() ? nullptr : query_mask.data(),
                                    key_mask.empty() ? nullptr : key_mask.data(), scale, causal);
  p.heads_kv = heads_kv;
  return p;
}

std::vector<float> Inputs::file_order(const std::vector<float>& x, int64_t h, int64_t n) const {
  return bnhd ? swap_middle(x, batch, h, n, dim) : x;
}

Inputs load_inputs(const Options& options) {
  const auto bundle = options.get("--inputs") ? files::list(files::parse_spec(*options.get("--inputs"), "").path)
                                               : npy::Listing{};
  const auto spec = [&](const std::string& flag, const std::string& name) {
    const auto s = input_spec(options, flag, name, bundle);
    if (!s && (name == "q" || name == "k" || name == "v")) throw Failure(flag, "required");
    return s;
  };
  Inputs in;
  const std::string layout = options.get("--layout").value_or("bhnd");
  if (layout != "bhnd" && layout != "bnhd")
    throw Failure("--layout", "expected bhnd ([B, H, N, D]) or bnhd ([B, N, H, D]), got '" + layout + "'");
  in.bnhd = layout == "bnhd";
  Tensor q = load_tensor(*spec("--q", "q"), "q");
  Tensor k = load_tensor(*spec("--k", "k"), "k");
  Tensor v = load_tensor(*spec("--v", "v"), "v");
  if (in.bnhd && q.shape.size() < 3)
    throw Failure("--layout", "bnhd needs inputs shaped [N, H, D] or [B, N, H, D], Q is " + shape_string(q.shape));
  if (k.shape.size() != q.shape.size())
    throw Failure(k.path, "shape " + shape_string(k.shape) + " does not have the rank of Q's " + shape_string(q.shape));
  int64_t kb = 0, kd = 0;
  split_shape(q.shape, in.bnhd, in.batch, in.heads, in.nq, in.dim);
  split_shape(k.shape, in.bnhd, kb, in.heads_kv, in.nk, kd);
  if (kb != in.batch || kd != in.dim)
    throw Failure(k.path, "shape " + shape_string(k.shape) + " does not match Q's " + shape_string(q.shape) +
                              " (batch and head dimension must agree)");
  // Fewer K/V heads than query heads: grouped K/V heads (GQA; MQA with one), each shared by heads / heads_kv
  // consecutive query heads (docs/semantics.md §8).
  if (in.heads_kv > in.heads || in.heads % in.heads_kv != 0)
    throw Failure(k.path, "shape " + shape_string(k.shape) + " has " + std::to_string(in.heads_kv) +
                              " heads, which do not divide Q's " + std::to_string(in.heads) +
                              " (grouped K/V heads need heads_kv dividing heads)");
  if (v.shape != k.shape)
    throw Failure(v.path, "shape " + shape_string(v.shape) + " differs from K's " + shape_string(k.shape));
  in.q_shape = q.shape;
  in.k_shape = k.shape;
  // Held as [B, H, N, D] whatever the files' layout; results go back to it (file_order).
  in.q = in.bnhd ? swap_middle(q.data, in.batch, in.nq, in.heads, in.dim) : std::move(q.data);
  in.k = in.bnhd ? swap_middle(k.data, in.batch, in.nk, in.heads_kv, in.dim) : std::move(k.data);
  in.v = in.bnhd ? swap_middle(v.data, in.batch, in.nk, in.heads_kv, in.dim) : std::move(v.data);

  // --mask is the one sequence of self-attention and masks queries and keys alike (as the official MRA does);
  // cross-attention names each side. Nothing depends silently on whether Nq equals Nk.
  const auto mask = spec("--mask", "mask");
  const auto key_mask = spec("--key-mask", "key_mask");
  const auto query_mask = spec("--query-mask", "query_mask");
  if (mask && (key_mask || query_mask))
    throw Failure("--mask", std::string("cannot be combined with ") + (key_mask ? "--key-mask" : "--query-mask") +
                                " (--mask masks queries and keys alike)");
  if (mask) {
    if (in.nq != in.nk)
      throw Failure("--mask", "masks queries and keys alike, but Nq = " + std::to_string(in.nq) + " and Nk = " +
                                  std::to_string(in.nk) + " differ: use --key-mask and/or --query-mask");
    in.key_mask = load_mask(*mask, "mask", in.batch, in.nk);
    in.query_mask = in.key_mask;
  }
  if (key_mask) in.key_mask = load_mask(*key_mask, "key_mask", in.batch, in.nk);
  if (query_mask) in.query_mask = load_mask(*query_mask, "query_mask", in.batch, in.nq);

  if (const auto s = options.get("--scale")) {
    in.scale = parse_real("--scale", *s);
    if (in.scale <= 0.0) throw Failure("--scale", "'" + *s + "' must be positive");
  }
  check_range(in, q.path, k.path, v.path, options.get("--scale"));
  in.causal = options.has("--causal");
  return in;
}

std::vector<float> load_upstream(const Options& options, const Inputs& in) {
  Tensor t = load_tensor(options.require("--dout"), "dout");
  if (t.shape != in.q_shape)
    throw Failure(t.path, "shape " + shape_string(t.shape) + " differs from Q's " + shape_string(in.q_shape) +
                              " (dout is the gradient of the output, shaped like Q)");
  return in.bnhd ? swap_middle(t.data, in.batch, in.nq, in.heads, in.dim) : std::move(t.data);
}

ref::Config load_config(const Options& options, int64_t nq, int64_t nk) {
  ref::Config c;
  if (const auto s = options.get("--scales")) c.scales = parse_int_list("--scales", *s, 1);
  // Validate the scales alone first, so that their errors name --scales rather than the budgets.
  c.budgets.assign(c.scales.empty() ? 0 : c.scales.size() - 1, 0);
  try {
    c.validate();
  } catch (const ref::Error& e) {
    throw Failure("--scales", e.what());
  }

  if (const auto m = options.get("--mode")) {
    if (*m == "full")
      c.mode = ref::Mode::full;
    else if (*m == "sparse")
      c.mode = ref::Mode::sparse;
    else
      throw Failure("--mode", "'" + *m + "' is not 'full' or 'sparse'");
  }
  // §9.4: causal attention is defined with the row policy only, which is therefore its default.
  const bool causal = options.has("--causal");
  c.policy = causal ? ref::Policy::row : ref::Policy::global;
  if (const auto m = options.get("--policy")) {
    if (*m == "global")
      c.policy = ref::Policy::global;
    else if (*m == "row")
      c.policy = ref::Policy::row;
    else
      throw Failure("--policy", "'" + *m + "' is not 'global' or 'row'");
    if (causal && c.policy == ref::Policy::global)
      throw Failure("--policy", "'global' cannot be combined with --causal: a global budget lets later rows' keys "
                                "change an earlier row's selection (docs/semantics.md §9.4); use row");
  }
  // §8.4: with grouped K/V heads, one selection per group instead of one per query head.
  if (const auto m = options.get("--selection")) {
    if (*m == "head")
      c.selection = ref::Scope::head;
    else if (*m == "group")
      c.selection = ref::Scope::group;
    else
      throw Failure("--selection", "'" + *m + "' is not 'head' or 'group'");
  }
  if (const auto f = options.get("--prior-first")) c.prior_first = parse_int("--prior-first", *f, 0);
  if (const auto g = options.get("--prior-diagonal")) c.prior_diagonal = parse_int("--prior-diagonal", *g, 0);

  const auto budget = options.get("--budget");
  const auto per_row = options.get("--blocks-per-row");
  if (budget && per_row) throw Failure("--budget", "cannot be combined with --blocks-per-row");
  if (budget) {
    c.budgets = parse_int_list("--budget", *budget, 0);
    const size_t steps = c.scales.size() - 1;
    if (c.budgets.size() != steps)
      throw Failure("--budget", "expected " + std::to_string(steps) + " value(s), one per refinement step of --scales, got " +
                                    std::to_string(c.budgets.size()));
  } else {
    const int64_t p = per_row ? parse_int("--blocks-per-row", *per_row, 0) : 4;
    try {
      // Policy row: the budget is per block row already (§10).
      c.budgets = c.policy == ref::Policy::row ? std::vector<int64_t>(c.scales.size() - 1, p)
                                               : ref::budgets_from_blocks_per_row(c.scales, nq, nk, p);
    } catch (const ref::Error& e) {
      throw Failure("--blocks-per-row", e.what());
    }
  }
  try {
    c.validate();
  } catch (const ref::Error& e) {
    throw Failure(budget ? "--budget" : "--blocks-per-row", e.what());
  }
  return c;
}

void save_f32(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  const files::Spec spec = files::parse_spec(path, "out");
  std::string bytes;
  try {
    bytes = files::serialize_f32(spec, shape, data.data());
  } catch (const std::length_error& e) {
    throw Failure(spec.text, e.what());
  }
  save_text(spec.path, bytes);
}

void save_text(const std::string& path, const std::string& text) {
  const std::string error = npy::write_file_atomic(path, text);
  if (!error.empty()) throw Failure(path, error);
}

std::string join(const std::vector<int64_t>& values, const std::string& separator) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += separator;
    s += std::to_string(values[i]);
  }
  return s;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  s += join(shape, ", ");
  s += "]";
  return s;
}

std::string index_string(const std::vector<int64_t>& shape, size_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    index[i] = static_cast<int64_t>(flat % static_cast<size_t>(shape[i]));
    flat /= static_cast<size_t>(shape[i]);
  }
  return shape_string(index);
}

}  // namespace mra::cli
