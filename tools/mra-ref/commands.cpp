// tools/mra-ref/commands.cpp: mra-ref attend, exact, select and compare. Tested by tests/cli and tests/interop.
#include "commands.h"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>

#include "inputs.h"
#include "mra.h"
#include "mra/reference.h"
#include "npy.h"

namespace mra::cli {
namespace {

void no_positional(const Options& options) {
  if (!options.positional().empty()) throw Failure(options.positional().front(), "unexpected argument");
}

// The generated kernels on the CPU (runtime/mra.h, mra_forward_host), f32 storage: what a GPU would compute,
// without a GPU. A configuration without a generated kernel is reported, not approximated by something else.
void attend_emulated(const Inputs& in, const ref::Config& config, std::vector<float>& out) {
  const std::string subject = "--backend emulated";
  if (config.scales.size() > MRA_MAX_LEVELS)
    throw Failure(subject, "at most " + std::to_string(MRA_MAX_LEVELS) + " resolutions are generated");
  mra_problem p{};
  p.batch = in.batch;
  p.heads = in.heads;
  p.nq = in.nq;
  p.nk = in.nk;
  p.dim = in.dim;
  p.dtype = MRA_DTYPE_F32;
  p.levels = static_cast<int32_t>(config.scales.size());
  for (size_t l = 0; l < config.scales.size(); ++l) p.resolutions[l] = config.scales[l];
  for (size_t l = 0; l < config.budgets.size(); ++l) p.budgets[l] = config.budgets[l];
  p.mode = config.mode == ref::Mode::full ? MRA_MODE_FULL : MRA_MODE_SPARSE;
  p.prior_first = config.prior_first;
  p.prior_diagonal = config.prior_diagonal;
  p.scale = in.scale;
  const auto check = [&](mra_status status) {
    if (status != MRA_SUCCESS)
      throw Failure(subject, std::string(mra_status_string(status)) + " (scales " + join(config.scales, ",") +
                                 ", D " + std::to_string(in.dim) + ", f32; docs/kernels.md lists what is generated)");
  };
  size_t bytes = 0;
  check(mra_workspace_size(&p, &bytes));
  std::vector<std::max_align_t> workspace(bytes / sizeof(std::max_align_t) + 1);
  check(mra_forward_host(&p, in.q.data(), in.k.data(), in.v.data(),
                         in.query_mask.empty() ? nullptr : in.query_mask.data(),
                         in.key_mask.empty() ? nullptr : in.key_mask.data(), out.data(), workspace.data(), bytes));
}

}  // namespace

int run_attend(const Options& options, const std::string&) {
  no_positional(options);
  const std::string out_path = options.require("-o");  // a missing -o fails before any work
  const std::string backend = options.get("--backend").value_or("reference");
  if (backend != "reference" && backend != "emulated")
    throw Failure("--backend", "expected reference or emulated, got '" + backend + "'");
  const Inputs in = load_inputs(options);
  const ref::Config config = load_config(options, in.nq, in.nk);
  const ref::Problem p = in.problem();
  const ref::Selection selection = ref::select(p, config);
  std::vector<float> out(in.q.size());
  if (backend == "emulated")
    attend_emulated(in, config, out);
  else
    ref::attend(p, config, selection, out.data());
  save_f32(out_path, in.q_shape, out);
  std::printf("wrote %s %s: scales %s, budgets %s, mode %s, backend %s, %.4f of the entries exact\n",
              out_path.c_str(), shape_string(in.q_shape).c_str(), join(config.scales, ",").c_str(),
              join(config.budgets, ",").c_str(), config.mode == ref::Mode::full ? "full" : "sparse", backend.c_str(),
              ref::coverage(p, config, selection).exact_fraction());
  return 0;
}

int run_exact(const Options& options, const std::string&) {
  no_positional(options);
  const std::string out_path = options.require("-o");  // a missing -o fails before any work
  const Inputs in = load_inputs(options);
  std::vector<float> out(in.q.size());
  ref::exact_attention(in.problem(), out.data());
  save_f32(out_path, in.q_shape, out);
  std::printf("wrote %s %s: exact attention\n", out_path.c_str(), shape_string(in.q_shape).c_str());
  return 0;
}

int run_select(const Options& options, const std::string&) {
  no_positional(options);
  const Inputs in = load_inputs(options);
  const ref::Config config = load_config(options, in.nq, in.nk);
  const ref::Selection s = ref::select(in.problem(), config);

  std::string json = "{\n";
  json += "  \"scales\": " + shape_string(config.scales) + ",\n";
  json += "  \"budgets\": " + shape_string(config.budgets) + ",\n";
  json += std::string("  \"mode\": \"") + (config.mode == ref::Mode::full ? "full" : "sparse") + "\",\n";
  json += "  \"prior_first\": " + std::to_string(config.prior_first) + ",\n";
  json += "  \"prior_diagonal\": " + std::to_string(config.prior_diagonal) + ",\n";
  json += "  \"batch\": " + std::to_string(in.batch) + ", \"heads\": " + std::to_string(in.heads) +
          ", \"nq\": " + std::to_string(in.nq) + ", \"nk\": " + std::to_string(in.nk) + ",\n";
  json += "  \"selected\": [";
  for (int64_t b = 0; b < in.batch; ++b) {
    for (int64_t h = 0; h < in.heads; ++h) {
      for (int64_t l = 0; l < s.steps; ++l) {
        const int64_t side = config.scales[static_cast<size_t>(l)];
        json += (b || h || l ? ",\n" : "\n");
        json += "    {\"b\": " + std::to_string(b) + ", \"h\": " + std::to_string(h) + ", \"level\": " +
                std::to_string(l) + ", \"side\": " + std::to_string(side) + ", \"nk_blocks\": " +
                std::to_string((in.nk + side - 1) / side) + ", \"blocks\": " + shape_string(s.at(b, h, l)) + "}";
      }
    }
  }
  json += "\n  ]\n}\n";

  if (const auto path = options.get("-o"))
    save_text(*path, json);
  else
    std::fputs(json.c_str(), stdout);
  return 0;
}

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

  // Containers: the array --tensor names, else the file's only one.
  const std::string tensor = options.get("--tensor").value_or("");
  const npy::Array a = load_array(path_a, tensor);
  const npy::Array b = load_array(path_b, tensor);
  const std::vector<int64_t>& shape = a.shape;
  if (b.shape != shape)
    throw Failure(path_b, "shape " + shape_string(b.shape) + " differs from " + path_a + "'s " + shape_string(shape));

  const std::vector<double>& x = a.values;
  const std::vector<double>& y = b.values;
  double diff2 = 0.0, ref2 = 0.0;
  // NaN counts as the worst possible error: the first NaN wins and stays.
  double worst = 0.0, worst_used = 0.0;
  size_t worst_at = 0, worst_used_at = 0, outside = 0;
  const auto worse = [](double candidate, double current) {
    return !std::isnan(current) && (std::isnan(candidate) || candidate > current);
  };
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = std::fabs(x[i] - y[i]);
    diff2 += e * e;
    ref2 += y[i] * y[i];
    if (worse(e, worst)) {
      worst = e;
      worst_at = i;
    }
    const double tol = atol + rtol * std::fabs(y[i]);
    const double used = tol > 0.0 ? e / tol : (e == 0.0 ? 0.0 : std::numeric_limits<double>::infinity());
    if (worse(used, worst_used)) {
      worst_used = used;
      worst_used_at = i;
    }
    if (!(e <= tol)) ++outside;
  }
  const double relative = ref2 > 0.0 ? std::sqrt(diff2 / ref2)
                                     : (diff2 == 0.0 ? 0.0 : std::numeric_limits<double>::infinity());
  const char* labels = shape.size() == 4 ? " [b, h, n, d]" : shape.size() == 3 ? " [h, n, d]"
                                                           : shape.size() == 2 ? " [n, d]" : "";

  std::printf("A: %s %s %s\nB: %s %s %s\n", path_a.c_str(), shape_string(shape).c_str(), a.descr.c_str(),
              path_b.c_str(), shape_string(shape).c_str(), b.descr.c_str());
  std::printf("relative Frobenius error ||A-B||/||B||: %.3e\n", relative);
  if (x.empty()) {
    std::printf("max absolute error: 0 (no elements)\n");
  } else {
    std::printf("max absolute error: %.3e at %s%s (A %.9g, B %.9g)\n", worst, index_string(shape, worst_at).c_str(),
                labels, x[worst_at], y[worst_at]);
  }
  if (!with_tolerance) return 0;
  if (outside == 0) {
    std::printf("PASS: |A-B| <= %g + %g*|B| everywhere; at most %.3g of the tolerance used\n", atol, rtol, worst_used);
    return 0;
  }
  std::printf("FAIL: |A-B| <= %g + %g*|B| fails for %zu of %zu elements; the worst uses %.3g times the tolerance, at %s%s\n",
              atol, rtol, outside, x.size(), worst_used, index_string(shape, worst_used_at).c_str(), labels);
  return 1;
}

}  // namespace mra::cli
