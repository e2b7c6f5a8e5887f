// tools/mra-ref/commands.cpp: mra-ref attend, exact, select and compare. Tested by tests/cli and tests/interop.
#include "commands.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>

#include <unistd.h>

#include "files.h"
#include "half.h"
#include "inputs.h"
#include "mra.h"
#include "mra/reference.h"
#include "npy.h"
#include "output.h"

namespace mra::cli {
namespace {

void no_positional(const Options& options) {
  if (!options.positional().empty()) throw Failure(options.positional().front(), "unexpected argument");
}

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

std::string sci(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3e", x);
  return buf;
}

// The backend of attend and grad (--backend) and, for the kernels, their storage type (--storage): what the
// inputs are rounded to before the kernels read them and what their results are stored in.
struct Backend {
  std::string name = "reference";
  std::string storage = "f32";
  mra_dtype dtype = MRA_DTYPE_F32;

  explicit Backend(const Options& options) {
    name = options.get("--backend").value_or(name);
    if (name != "reference" && name != "emulated")
      throw Failure("--backend", "expected reference or emulated, got '" + name + "'");
    const std::optional<std::string> given = options.get("--storage");
    if (!given) return;
    if (name != "emulated")
      throw Failure("--storage", "needs --backend emulated (the reference computes in float64 with float32 results)");
    storage = *given;
    if (storage == "f16")
      dtype = MRA_DTYPE_F16;
    else if (storage == "bf16")
      dtype = MRA_DTYPE_BF16;
    else if (storage != "f32")
      throw Failure("--storage", "expected f32, f16 or bf16, got '" + storage + "'");
  }
  bool emulated() const { return name == "emulated"; }
  // For the summary line: "emulated, storage bf16".
  std::string describe() const { return name + (emulated() ? ", storage " + storage : ""); }
};

// The generated kernels on the CPU (runtime/mra.h), in the storage type --storage names: what a GPU would compute,
// without a GPU. A configuration without a generated kernel is reported, not approximated by something else.
// forward() keeps its workspace: the saved state backward() reads (docs/kernels.md, "Backward").
class Emulated {
 public:
  Emulated(const Inputs& in, const ref::Config& config, const Backend& backend)
      : in_(in), config_(config), backend_(backend) {
    if (config.scales.size() > MRA_MAX_LEVELS)
      throw Failure(kSubject, "at most " + std::to_string(MRA_MAX_LEVELS) + " resolutions are generated");
    p_.batch = in.batch;
    p_.heads = in.heads;
    p_.heads_kv = in.heads_kv;
    p_.nq = in.nq;
    p_.nk = in.nk;
    p_.dim = in.dim;
    p_.dtype = backend.dtype;
    p_.levels = static_cast<int32_t>(config.scales.size());
    for (size_t l = 0; l < config.scales.size(); ++l) p_.resolutions[l] = config.scales[l];
    for (size_t l = 0; l < config.budgets.size(); ++l) p_.budgets[l] = config.budgets[l];
    p_.mode = config.mode == ref::Mode::full ? MRA_MODE_FULL : MRA_MODE_SPARSE;
    p_.prior_first = config.prior_first;
    p_.prior_diagonal = config.prior_diagonal;
    p_.policy = config.policy == ref::Policy::row ? MRA_POLICY_ROW : MRA_POLICY_GLOBAL;
    p_.selection = config.selection == ref::Scope::group ? MRA_SELECTION_GROUP : MRA_SELECTION_HEAD;
    p_.scale = in.scale;
    p_.causal = in.causal;
    q_ = stored(in.q, "--q", {in.batch, in.heads, in.nq, in.dim});
    k_ = stored(in.k, "--k", {in.batch, in.heads_kv, in.nk, in.dim});
    v_ = stored(in.v, "--v", {in.batch, in.heads_kv, in.nk, in.dim});
  }

  void forward(std::vector<float>& out) {
    check(mra_workspace_size(&p_, &bytes_), "");
    workspace_.assign(bytes_ / sizeof(std::max_align_t) + 1, {});
    out_.assign(out.size() * element_bytes(), 0);
    check(mra_forward_host(&p_, q_.data(), k_.data(), v_.data(), qmask(), kmask(), out_.data(), workspace_.data(),
                           bytes_), "");
    loaded(out_, out);
  }

  // After forward(out): the gradients of L = sum(dout * out), dout rounded to the storage type first.
  void backward(const std::vector<float>& dout, std::vector<float>& dq, std::vector<float>& dk,
                std::vector<float>& dv) {
    const std::vector<unsigned char> upstream = stored(dout, "--dout", {in_.batch, in_.heads, in_.nq, in_.dim});
    std::vector<unsigned char> grads[3];
    for (auto [g, n] : {std::pair{0, dq.size()}, std::pair{1, dk.size()}, std::pair{2, dv.size()}})
      grads[g].assign(n * element_bytes(), 0);
    size_t grad_bytes = 0;
    check(mra_backward_workspace_size(&p_, &grad_bytes), "");
    std::vector<std::max_align_t> grad_workspace(grad_bytes / sizeof(std::max_align_t) + 1);
    check(mra_backward_host(&p_, q_.data(), k_.data(), v_.data(), qmask(), kmask(), out_.data(), upstream.data(),
                            grads[0].data(), grads[1].data(), grads[2].data(), workspace_.data(), bytes_,
                            grad_workspace.data(), grad_bytes), "");
    loaded(grads[0], dq);
    loaded(grads[1], dk);
    loaded(grads[2], dv);
  }

 private:
  static constexpr const char* kSubject = "--backend emulated";
  size_t element_bytes() const { return backend_.dtype == MRA_DTYPE_F32 ? 4 : 2; }
  const uint8_t* qmask() const { return in_.query_mask.empty() ? nullptr : in_.query_mask.data(); }
  const uint8_t* kmask() const { return in_.key_mask.empty() ? nullptr : in_.key_mask.data(); }

  // `x` in the storage type; a value beyond its range (float16's 65504) is refused, naming `flag` and the index.
  std::vector<unsigned char> stored(const std::vector<float>& x, const char* flag,
                                    const std::vector<int64_t>& shape) const {
    std::vector<unsigned char> bytes(x.size() * element_bytes());
    for (size_t i = 0; i < x.size(); ++i) {
      if (backend_.dtype == MRA_DTYPE_F32) {
        std::memcpy(&bytes[4 * i], &x[i], 4);
        continue;
      }
      const uint16_t h = backend_.dtype == MRA_DTYPE_F16 ? half::float_to_binary16(x[i]) : half::float_to_bfloat16(x[i]);
      if (std::isinf(from_storage(h)))
        throw Failure(flag, sci(x[i]) + " at " + index_string(shape, i) + " is beyond the range of --storage " +
                                backend_.storage);
      std::memcpy(&bytes[2 * i], &h, 2);
    }
    return bytes;
  }
  float from_storage(uint16_t h) const {
    return backend_.dtype == MRA_DTYPE_F16 ? half::binary16_to_float(h) : half::bfloat16_to_float(h);
  }
  // The kernels' results as float32 (exact: every 16-bit value is a float).
  void loaded(const std::vector<unsigned char>& bytes, std::vector<float>& to) const {
    for (size_t i = 0; i < to.size(); ++i) {
      if (backend_.dtype == MRA_DTYPE_F32) {
        std::memcpy(&to[i], &bytes[4 * i], 4);
        continue;
      }
      uint16_t h;
      std::memcpy(&h, &bytes[2 * i], 2);
      to[i] = from_storage(h);
    }
  }
  void check(mra_status status, const std::string& more) const {
    if (status != MRA_SUCCESS)
      throw Failure(kSubject, std::string(mra_status_string(status)) + " (scales " + join(config_.scales, ",") +
                                  ", D " + std::to_string(in_.dim) + ", " + backend_.storage +
                                  "; docs/kernels.md lists what is generated" + more + ")");
  }

  const Inputs& in_;
  const ref::Config& config_;
  const Backend& backend_;
  mra_problem p_{};
  std::vector<unsigned char> q_, k_, v_, out_;
  size_t bytes_ = 0;
  std::vector<std::max_align_t> workspace_;
};

// Text for stdout or stderr, checked: a full disk or a closed pipe is an error, not a silent exit 0 (main
// checks the final flush and close as well).
void checked_print(std::FILE* to, const std::string& text) {
  if (std::fputs(text.c_str(), to) < 0 || std::fflush(to) != 0)
    throw Failure(to == stdout ? "stdout" : "stderr", std::string("cannot write: ") + std::strerror(errno));
}

// Progress of a long computation on stderr, when stderr is a terminal and --quiet is not given: one line,
// rewritten at most five times a second and cleared at the end.
class Progress {
 public:
  Progress(const Options& options, const std::string& label, int64_t total)
      : label_(label), total_(total), shown_(!options.has("--quiet") && ::isatty(STDERR_FILENO) == 1) {}
  ~Progress() {
    if (printed_) std::fputs("\r\033[K", stderr);
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void at(int64_t done) {
    if (!shown_) return;
    const auto now = std::chrono::steady_clock::now();
    if (printed_ && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    printed_ = true;
    std::fprintf(stderr, "\rmra-ref %s: %3d%%", label_.c_str(), int(100.0 * double(done) / double(total_)));
  }

 private:
  std::string label_;
  int64_t total_;
  bool shown_, printed_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// Float32 files: a gradient beyond float32 is refused rather than written as infinity. `from` goes to
// to[first ...]; the message names the element's index in `shape`.
void store_f32(const std::vector<double>& from, std::vector<float>& to, size_t first, const std::vector<int64_t>& shape,
               const char* what) {
  for (size_t i = 0; i < from.size(); ++i) {
    if (std::fabs(from[i]) > std::numeric_limits<float>::max())
      throw Failure("--dout", std::string("the gradient ") + what + " overflows float32 at " +
                                  index_string(shape, first + i));
    to[first + i] = static_cast<float>(from[i]);
  }
}

// Slice (b, h) of `p` (contiguous) as a problem of its own, restricted to the queries [first, first + count);
// its K and V are those of h's K/V head (§8).
ref::Problem part(const ref::Problem& p, int64_t b, int64_t h, int64_t first, int64_t count, int64_t heads = 1) {
  const int64_t bh = b * p.heads + h, bkv = b * p.kv_heads() + p.kv_head(h);
  ref::Problem part = ref::Problem::of(1, heads, count, p.nk, p.dim, p.q + (bh * p.nq + first) * p.dim,
                                       p.k + bkv * p.nk * p.dim, p.v + bkv * p.nk * p.dim,
                                       p.query_mask ? p.query_mask + b * p.nq + first : nullptr,
                                       p.key_mask ? p.key_mask + b * p.nk : nullptr, p.scale, p.causal);
  part.heads_kv = 1;
  return part;
}

// The query heads computed together: one, or with a selection shared by each group (§8.4) the group, whose
// heads are no longer independent.
int64_t heads_per_part(const ref::Problem& p, const ref::Config& c) {
  return c.selection == ref::Scope::group ? p.heads / p.kv_heads() : 1;
}

// The output, opened before any work (so that a bad path fails at once), and written at the end; its
// failures name the path.
class Destination {
 public:
  // `path` may name an array in a container (files.h: OUT.npz[:NAME], OUT.safetensors[:NAME]).
  explicit Destination(const std::string& path, const std::string& default_name = "out")
      : spec_(files::parse_spec(path, default_name)), path_(path == "-" ? "stdout" : path), out_(spec_.path) {
    if (!out_.error().empty()) throw Failure(path, out_.error());
  }
  void write(const std::string& bytes) {
    const std::string error = out_.commit(bytes);
    if (!error.empty()) throw Failure(path_, error);
  }
  // A float32 array, in the format the path's extension names.
  void write_f32(const std::vector<int64_t>& shape, const std::vector<float>& data) {
    std::string bytes;
    try {
      bytes = files::serialize_f32(spec_, shape, data.data());
    } catch (const std::length_error& e) {
      throw Failure(path_, e.what());
    }
    write(bytes);
  }
  const std::string& file() const { return spec_.path; }
  // The summary line goes where the output does not: stderr when the output is stdout.
  std::FILE* report() const { return out_.to_stdout() ? stderr : stdout; }

 private:
  files::Spec spec_;
  std::string path_;
  npy::Output out_;
};

}  // namespace

int run_attend(const Options& options, const std::string&) {
  no_positional(options);
  const std::string out_path = options.require("-o");
  const Backend backend(options);
  Destination destination(out_path);
  refuse_output_over_inputs(options, "-o", out_path);
  const Inputs in = load_inputs(options);
  const ref::Config config = load_config(options, in.nq, in.nk);
  const ref::Problem p = in.problem();
  std::vector<float> out(in.q.size());
  ref::Coverage coverage;
  if (backend.emulated()) {
    Emulated(in, config, backend).forward(out);
    coverage = ref::coverage(p, config, ref::select(p, config));
  } else {
    // Slice by slice (group by group when a group shares its selection): the same numbers as one call (they are
    // independent), with progress between them.
    Progress progress(options, "attend", in.batch * in.heads);
    const int64_t span = heads_per_part(p, config);
    for (int64_t b = 0; b < in.batch; ++b)
      for (int64_t h = 0; h < in.heads; h += span) {
        progress.at(b * in.heads + h);
        const ref::Problem slice = part(p, b, h, 0, in.nq, span);
        const ref::Selection selection = ref::select(slice, config);
        ref::attend(slice, config, selection, out.data() + (b * in.heads + h) * in.nq * in.dim);
        const ref::Coverage c = ref::coverage(slice, config, selection);
        coverage.exact_entries += c.exact_entries;
        coverage.total_entries += c.total_entries;
      }
  }
  destination.write_f32(in.q_shape, in.file_order(out, in.heads, in.nq));
  checked_print(destination.report(), "wrote " + printable(out_path) + " " + shape_string(in.q_shape) + ": scales " +
                                          join(config.scales, ",") + ", budgets " + join(config.budgets, ",") +
                                          ", mode " + (config.mode == ref::Mode::full ? "full" : "sparse") +
                                          (config.policy == ref::Policy::row ? ", policy row" : "") +
                                          (config.selection == ref::Scope::group ? ", selection group" : "") +
                                          (in.causal ? ", causal" : "") + ", backend " + backend.describe() + ", " +
                                          fixed(coverage.exact_fraction(), 4) +
                                          " of the entries exact\n");
  return 0;
}

int run_grad(const Options& options, const std::string&) {
  no_positional(options);
  // Three outputs, all opened before any work; two of them in one file would leave only the last one written.
  const std::vector<std::pair<std::string, std::string>> flags{{"--dq", "dq"}, {"--dk", "dk"}, {"--dv", "dv"}};
  std::vector<std::string> paths;
  std::vector<std::unique_ptr<Destination>> destinations;
  for (const auto& [flag, name] : flags) {
    paths.push_back(options.require(flag));
    destinations.push_back(std::make_unique<Destination>(paths.back(), name));
    refuse_output_over_inputs(options, flag, paths.back());
    for (size_t t = 0; t + 1 < destinations.size(); ++t)
      if (destinations[t]->file() == destinations.back()->file())
        throw Failure(flag, "names the same file as " + flags[t].first + " ('" + paths.back() + "')");
  }
  const Backend backend(options);
  const Inputs in = load_inputs(options);
  const std::vector<float> dout = load_upstream(options, in);
  const ref::Config config = load_config(options, in.nq, in.nk);
  const ref::Problem p = in.problem();
  // dk and dv per K/V head: the reference's are summed over the group (§8) in double before the one rounding.
  std::vector<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  std::vector<double> dk_sum(in.k.size()), dv_sum(in.v.size());
  if (backend.emulated()) {
    // The kernels' forward, then their backward on its saved state. The inputs are finite (load_inputs refuses
    // others), so a non-finite gradient can only be one beyond the storage type: refused as the reference's is.
    Emulated kernels(in, config, backend);
    std::vector<float> out(in.q.size());
    kernels.forward(out);
    kernels.backward(dout, dq, dk, dv);
    for (const auto& [values, heads, n, what] :
         {std::tuple{&dq, in.heads, in.nq, "dq"}, std::tuple{&dk, in.heads_kv, in.nk, "dk"},
          std::tuple{&dv, in.heads_kv, in.nk, "dv"}})
      for (size_t i = 0; i < values->size(); ++i)
        if (!std::isfinite((*values)[i]))
          throw Failure("--dout", std::string("the gradient ") + what + " overflows " + backend.storage + " at " +
                                      index_string({in.batch, heads, n, in.dim}, i));
  }
  // Slice by slice (or group by group), as attend: the selection of each is the forward's, then held fixed.
  Progress progress(options, "grad", in.batch * in.heads);
  const int64_t span = heads_per_part(p, config);
  for (int64_t b = 0; !backend.emulated() && b < in.batch; ++b)
    for (int64_t h = 0; h < in.heads; h += span) {
      progress.at(b * in.heads + h);
      const int64_t bh = b * in.heads + h;
      const ref::Problem slice = part(p, b, h, 0, in.nq, span);
      const ref::Gradients g = ref::attend_backward(slice, config, ref::select(slice, config),
                                                    dout.data() + bh * in.nq * in.dim);
      store_f32(g.dq, dq, size_t(bh * in.nq * in.dim), {in.batch, in.heads, in.nq, in.dim}, "dq");
      const size_t kv_first = size_t((b * in.heads_kv + p.kv_head(h)) * in.nk * in.dim);
      for (size_t i = 0; i < g.dk.size(); ++i) {
        dk_sum[kv_first + i] += g.dk[i];
        dv_sum[kv_first + i] += g.dv[i];
      }
    }
  if (!backend.emulated()) {
    store_f32(dk_sum, dk, 0, {in.batch, in.heads_kv, in.nk, in.dim}, "dk");
    store_f32(dv_sum, dv, 0, {in.batch, in.heads_kv, in.nk, in.dim}, "dv");
  }
  destinations[0]->write_f32(in.q_shape, in.file_order(dq, in.heads, in.nq));
  destinations[1]->write_f32(in.k_shape, in.file_order(dk, in.heads_kv, in.nk));
  destinations[2]->write_f32(in.k_shape, in.file_order(dv, in.heads_kv, in.nk));
  checked_print(destinations[0]->report(),
                "wrote " + printable(paths[0]) + " " + shape_string(in.q_shape) + ", " + printable(paths[1]) +
                    " and " + printable(paths[2]) + " " + shape_string(in.k_shape) + ": gradients of MRA attention with the selection held fixed, scales " +
                    join(config.scales, ",") + ", budgets " + join(config.budgets, ",") + ", mode " +
                    (config.mode == ref::Mode::full ? "full" : "sparse") + ", backend " + backend.describe() + "\n");
  return 0;
}

int run_exact(const Options& options, const std::string&) {
  no_positional(options);
  Destination destination(options.require("-o"));
  refuse_output_over_inputs(options, "-o", options.require("-o"));
  const Inputs in = load_inputs(options);
  const ref::Problem p = in.problem();
  std::vector<float> out(in.q.size());
  // In parts of kRows queries: exact attention is row by row, so the parts give the numbers of one call. Causal
  // attention is not cut: a part's own Nk - Nq would move the diagonal (docs/semantics.md §9.1).
  const int64_t kRows = in.causal ? in.nq : 256;
  const int64_t parts = (in.nq + kRows - 1) / kRows;
  Progress progress(options, "exact", in.batch * in.heads * parts);
  for (int64_t b = 0; b < in.batch; ++b)
    for (int64_t h = 0; h < in.heads; ++h)
      for (int64_t t = 0; t < parts; ++t) {
        progress.at((b * in.heads + h) * parts + t);
        const int64_t first = t * kRows, count = std::min(kRows, in.nq - first);
        ref::exact_attention(part(p, b, h, first, count), out.data() + ((b * in.heads + h) * in.nq + first) * in.dim);
      }
  destination.write_f32(in.q_shape, in.file_order(out, in.heads, in.nq));
  checked_print(destination.report(),
                "wrote " + printable(options.require("-o")) + " " + shape_string(in.q_shape) + ": exact attention\n");
  return 0;
}

int run_select(const Options& options, const std::string&) {
  no_positional(options);
  if (options.has("--backend"))
    throw Failure("--backend", "is not an option of select, which prints the reference's selection (the kernels "
                               "select the same blocks)");
  Destination destination(options.get("-o").value_or("-"));
  refuse_output_over_inputs(options, "-o", options.get("-o").value_or("-"));
  const Inputs in = load_inputs(options);
  const ref::Config config = load_config(options, in.nq, in.nk);
  const ref::Selection s = ref::select(in.problem(), config);
  std::string json = "{\n";
  json += "  \"scales\": " + shape_string(config.scales) + ",\n";
  json += "  \"budgets\": " + shape_string(config.budgets) + ",\n";
  json += std::string("  \"mode\": \"") + (config.mode == ref::Mode::full ? "full" : "sparse") + "\",\n";
  json += "  \"prior_first\": " + std::to_string(config.prior_first) + ",\n";
  json += "  \"prior_diagonal\": " + std::to_string(config.prior_diagonal) + ",\n";
  json += std::string("  \"policy\": \"") + (config.policy == ref::Policy::row ? "row" : "global") + "\",\n";
  json += std::string("  \"selection\": \"") + (config.selection == ref::Scope::group ? "group" : "head") + "\",\n";
  json += std::string("  \"causal\": ") + (in.causal ? "true" : "false") + ",\n";
  json += "  \"batch\": " + std::to_string(in.batch) + ", \"heads\": " + std::to_string(in.heads) +
          ", \"nq\": " + std::to_string(in.nq) + ", \"nk\": " + std::to_string(in.nk) + ",\n";
  json += "  \"selected\": [";
  for (int64_t b = 0; b < in.batch; ++b) {
    for (int64_t h = 0; h < in.heads; ++h) {
      for (int64_t l = 0; l < s.steps; ++l) {
        const int64_t side = config.scales[static_cast<size_t>(l)];
        json += (b || h || l ? ",\n" : "\n");
        // Levels are numbered from 1, as docs/semantics.md numbers them (T_1 ... T_{L-1}).
        const int64_t nk_blocks = in.nk / side + (in.nk % side != 0);
        json += "    {\"b\": " + std::to_string(b) + ", \"h\": " + std::to_string(h) + ", \"level\": " +
                std::to_string(l + 1) + ", \"side\": " + std::to_string(side) + ", \"nk_blocks\": " +
                std::to_string(nk_blocks) + ", \"blocks\": " + shape_string(s.at(b, h, l)) + "}";
      }
    }
  }
  json += "\n  ]\n}\n";
  destination.write(json);
  return 0;
}

namespace {

// The error of B against A over a range of elements: relative Frobenius error, largest absolute error and the
// tolerance check. A NaN or infinity counts as equal only to the same value at the same index; any other
// non-finite difference is the worst possible error and fails, with or without a tolerance.
struct Errors {
  double diff2 = 0.0, ref2 = 0.0, worst = 0.0, worst_used = 0.0;
  size_t worst_at = 0, worst_used_at = 0, outside = 0, mismatched = 0, first_mismatch = 0;

  void add(size_t i, double x, double y, double atol, double rtol) {
    if ((std::isnan(x) && std::isnan(y)) || (std::isinf(x) && x == y)) return;  // equal, and no tolerance applies
    const double e = std::fabs(x - y);
    if (!(std::isfinite(x) && std::isfinite(y))) {
      if (mismatched++ == 0) first_mismatch = i;
    } else {
      diff2 += e * e;
      ref2 += y * y;
    }
    const auto worse = [](double candidate, double current) {
      return !std::isnan(current) && (std::isnan(candidate) || candidate > current);
    };
    if (worse(e, worst)) {
      worst = e;
      worst_at = i;
    }
    const double tol = atol + rtol * std::fabs(y);
    const double used = tol > 0.0 ? e / tol : (e == 0.0 ? 0.0 : std::numeric_limits<double>::infinity());
    if (worse(used, worst_used)) {
      worst_used = used;
      worst_used_at = i;
    }
    if (!(e <= tol)) ++outside;
  }
  double relative() const {
    if (mismatched) return std::numeric_limits<double>::quiet_NaN();
    return ref2 > 0.0 ? std::sqrt(diff2 / ref2) : (diff2 == 0.0 ? 0.0 : std::numeric_limits<double>::infinity());
  }
};

npy::Array load_for_compare(const std::string& path, const std::string& tensor) {
  std::string subject;
  npy::Array array = load_array(path, tensor, &subject);
  // Integers are compared through doubles, which hold every integer up to 2^53 exactly; beyond, two different
  // integers could compare equal, so such files are refused rather than compared wrongly.
  if (array.rounded)
    throw Failure(subject, "integer at " + index_string(array.shape, array.rounded - 1) +
                               " is beyond 2^53, which compare cannot represent exactly");
  return array;
}

}  // namespace

int run_compare(const Options& options, const std::string&) {
  if (options.positional().size() != 2) throw Failure("compare", "expects exactly two files, A.npy and B.npy");
  const std::string& path_a = options.positional()[0];
  const std::string& path_b = options.positional()[1];
  double atol = 0.0, rtol = 0.0;
  const bool with_tolerance = options.has("--atol") || options.has("--rtol");
  if (const auto s = options.get("--atol")) atol = parse_real("--atol", *s);
  if (const auto s = options.get("--rtol")) rtol = parse_real("--rtol", *s);
  if (atol < 0.0) throw Failure("--atol", "must not be negative");
  if (rtol < 0.0) throw Failure("--rtol", "must not be negative");
  const bool per_head = options.has("--per-head");

  // Containers: the array --tensor names, else the file's only one.
  const std::string tensor = options.get("--tensor").value_or("");
  const npy::Array a = load_for_compare(path_a, tensor);
  const npy::Array b = load_for_compare(path_b, tensor);
  const std::vector<int64_t>& shape = a.shape;
  if (b.shape != shape)
    throw Failure(path_b, "shape " + shape_string(b.shape) + " differs from " + path_a + "'s " + shape_string(shape));
  if (per_head && (shape.size() < 3 || shape.size() > 4))
    throw Failure("--per-head", "needs files shaped [H, N, D] or [B, H, N, D], got " + shape_string(shape));

  const std::vector<double>& x = a.values;
  const std::vector<double>& y = b.values;
  Errors all;
  for (size_t i = 0; i < x.size(); ++i) all.add(i, x[i], y[i], atol, rtol);
  const char* labels = shape.size() == 4 ? " [b, h, n, d]" : shape.size() == 3 ? " [h, n, d]"
                                                           : shape.size() == 2 ? " [n, d]" : "";

  std::string text = "A: " + path_a + " " + shape_string(shape) + " " + a.descr + "\nB: " + path_b + " " +
                     shape_string(shape) + " " + b.descr + "\n";
  text += "relative Frobenius error ||A-B||/||B||: " + sci(all.relative()) + "\n";
  if (x.empty()) {
    text += "max absolute error: 0 (no elements)\n";
  } else {
    char values[128];
    std::snprintf(values, sizeof values, " (A %.9g, B %.9g)\n", x[all.worst_at], y[all.worst_at]);
    text += "max absolute error: " + sci(all.worst) + " at " + index_string(shape, all.worst_at) + labels + values;
  }
  if (per_head) {
    // One line per (b, h) slice: where the error sits, not only how large it is overall.
    const int64_t slice = shape[shape.size() - 2] * shape[shape.size() - 1];
    const int64_t heads = shape[shape.size() - 3];
    for (size_t start = 0; start < x.size(); start += size_t(slice)) {
      Errors e;
      for (size_t i = start; i < start + size_t(slice); ++i) e.add(i, x[i], y[i], atol, rtol);
      const int64_t bh = int64_t(start) / slice;
      text += (shape.size() == 4 ? "b " + std::to_string(bh / heads) + " h " : "h ") + std::to_string(bh % heads) +
              ": relative " + sci(e.relative()) + ", max absolute " + sci(e.worst) + " at " +
              index_string(shape, e.worst_at) + "\n";
    }
  }
  int status = 0;
  if (all.mismatched) {
    char values[128];
    std::snprintf(values, sizeof values, " (A %g, B %g)", x[all.first_mismatch], y[all.first_mismatch]);
    text += "FAIL: " + std::to_string(all.mismatched) + " of " + std::to_string(x.size()) +
            " elements are NaN or infinite in one file and not in the other, the first at " +
            index_string(shape, all.first_mismatch) + labels + values + "\n";
    status = 1;
  } else if (with_tolerance && all.outside == 0) {
    char line[160];
    std::snprintf(line, sizeof line, "PASS: |A-B| <= %g + %g*|B| everywhere; at most %.3g of the tolerance used\n",
                  atol, rtol, all.worst_used);
    text += line;
  } else if (with_tolerance) {
    char line[200];
    std::snprintf(line, sizeof line,
                  "FAIL: |A-B| <= %g + %g*|B| fails for %zu of %zu elements; the worst uses %.3g times the "
                  "tolerance, at ",
                  atol, rtol, all.outside, x.size(), all.worst_used);
    text += line + index_string(shape, all.worst_used_at) + labels + "\n";
    status = 1;
  }
  checked_print(stdout, text);
  return status;
}

}  // namespace mra::cli
