// tests/kernels/stages_cuda.cpp: the `stages` mode of the GPU kit (gpu_kit.cpp): CUDA-event timings per stage of the
// forward of issue 9's case, mra_fwd_r32x1_d64_bf16 (B = 1, H = 16, D = 64, bf16, R = (32, 1), 4 refined blocks per
// block row, mode full), and of the same kernels with every block refined (mode sparse, budget = all pairs: exact
// attention, the dense comparison of `bench`), timed in the same run, each beside tools/perf-model's estimate.
//   mra-gpu-kit stages [--plan] [--model FILE] [N...]      (default N = 1K, 2K, 4K, 8K, 16K, 32K, 64K)
//
// The stages are those the runtime tells a launch observer (mra_set_launch_observer, runtime/mra.h): at each change
// of stage the observer records a CUDA event on the call's stream, and a stage's time is the span from its event to
// the next one (or to the end of the call). Per problem: the plain forward (no observer) and the observed one, each
// timed by mra::test::time_calls (3 warm-ups, the median of 21); per stage the median of those 21 calls. The model's
// estimates come from perf-model.tsv next to the executable (generated at build time by `tools/perf-model --gpu h200
// --mode full dense --tsv`, packed into the kit), or FILE; a measured stage sums the model's stages of its name and
// their parts ("attend" = "attend: coarse part" + "attend: exact part"), and "-" stands where the model has none.
// --plan prints the same tables with the measured columns "-", and needs no GPU (nvcc.gpu_kit runs it).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "bench.h"
#include "dispatch.h"
#include "mra.h"

namespace {

constexpr const char* kCase = "mra_fwd_r32x1_d64_bf16";
constexpr int64_t kHeads = 16;
const double kNone = std::nan("");

// The model's estimates (us) by (N, mode, stage): perf-model.tsv; and its stages as the observer names them (a part,
// "name: part", belongs to "name"), in the table's order, totals and FlashAttention left out.
struct Model {
  std::map<std::tuple<int64_t, std::string, std::string>, double> us;
  std::vector<std::string> stages;
};

// Reads the table; false with one line naming the file (and line) when it cannot be read or is malformed.
bool load_model(const std::string& path, Model* model, std::string* why) {
  std::ifstream in(path);
  if (!in) {
    *why = "cannot read '" + path + "'";
    return false;
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string x; std::getline(fields, x, '\t');) f.push_back(x);
    char* end = nullptr;
    const double us = f.size() == 4 ? std::strtod(f[3].c_str(), &end) : kNone;
    const long long n = f.size() == 4 ? std::atoll(f[0].c_str()) : 0;
    if (f.size() != 4 || n <= 0 || end == f[3].c_str() || *end != '\0' || !(us >= 0)) {
      *why = path + ":" + std::to_string(number) + ": expected 'N<tab>mode<tab>stage<tab>us', got '" + line + "'";
      return false;
    }
    model->us[{n, f[1], f[2]}] = us;
    const std::string stage = f[2].substr(0, f[2].find(": "));
    if (stage != "MRA total" && stage.rfind("FlashAttention", 0) != 0 &&
        std::find(model->stages.begin(), model->stages.end(), stage) == model->stages.end())
      model->stages.push_back(stage);
  }
  return true;
}

// The model's estimate of a measured stage: its stages of that name and their parts ("name: part"), summed; NaN
// where it has none.
double estimate(const Model& model, int64_t n, const std::string& mode, const std::string& stage) {
  double sum = 0;
  bool found = false;
  for (const auto& [key, us] : model.us) {
    const auto& [kn, kmode, kstage] = key;
    if (kn == n && kmode == mode && (kstage == stage || kstage.rfind(stage + ": ", 0) == 0)) {
      sum += us;
      found = true;
    }
  }
  return found ? sum : kNone;
}

// The launch observer's state for one call: an event recorded at each change of stage, and the stage it opens.
struct StageClock {
  std::vector<cudaEvent_t> events;  // the last one closes the call
  std::vector<std::string> names;
  bool overflow = false;
};

void on_launch(void* user, const char* stage, cudaStream_t stream) {
  StageClock& c = *static_cast<StageClock*>(user);
  if (!c.names.empty() && c.names.back() == stage) return;
  if (c.names.size() + 1 >= c.events.size()) {  // keep the last event for the end of the call
    c.overflow = true;
    return;
  }
  cudaEventRecord(c.events[c.names.size()], stream);
  c.names.emplace_back(stage);
}

// What one problem measured (ms): the plain forward, the observed one, and per stage its 21 samples (a stage met
// twice in one call counts once, summed), in the order the stages first ran.
struct Measured {
  double plain = kNone, observed = kNone;
  std::vector<std::string> order;
  std::map<std::string, std::vector<float>> samples;
  bool ok = false;
};

Measured measure(const mra_problem& p, void* const* t, void* ws, size_t ws_bytes) {
  Measured m;
  auto forward = [&] { return mra_forward(&p, t[0], t[1], t[2], nullptr, nullptr, t[3], ws, ws_bytes, nullptr); };
  m.plain = mra::test::time_calls(forward);
  StageClock clock;
  clock.events.resize(32);
  for (cudaEvent_t& e : clock.events) cudaEventCreate(&e);
  mra_set_launch_observer(on_launch, &clock);
  m.observed = mra::test::time_calls(
      [&] {
        clock.names.clear();
        const mra_status s = forward();
        cudaEventRecord(clock.events[clock.names.size()], nullptr);
        return s;
      },
      [&] {  // this call's stages, its events complete
        std::map<std::string, float> call;
        for (size_t i = 0; i < clock.names.size(); ++i) {
          float ms = 0.f;
          cudaEventElapsedTime(&ms, clock.events[i], clock.events[i + 1]);
          if (!call.count(clock.names[i]) && !m.samples.count(clock.names[i])) m.order.push_back(clock.names[i]);
          call[clock.names[i]] += ms;
        }
        for (const auto& [name, ms] : call) m.samples[name].push_back(ms);
      });
  mra_set_launch_observer(nullptr, nullptr);
  for (cudaEvent_t e : clock.events) cudaEventDestroy(e);
  m.ok = m.plain >= 0 && m.observed >= 0 && !clock.overflow;
  return m;
}

// A cell: the figure in us with 4 significant digits, or "-".
std::string cell(double us) {
  if (std::isnan(us)) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", us);
  return text;
}

double median_us(const Measured& m, const std::string& stage) {
  const auto it = m.samples.find(stage);
  if (it == m.samples.end() || it->second.empty()) return kNone;
  std::vector<float> v = it->second;
  return 1e3 * mra::test::median(v);
}

// The directory of this executable, where the build and the kit put perf-model.tsv.
std::string own_directory() {
  std::vector<char> path(4096);
  const ssize_t n = readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) return ".";
  std::string p(path.data(), size_t(n));
  return p.substr(0, p.rfind('/'));
}

}  // namespace

int mra::test::stages(const std::vector<int64_t>& ns, const std::string& model_file, bool plan) {
  const mra::detail::ConfigInfo* e = built_config(kCase);
  if (e == nullptr) {
    std::fprintf(stderr, "mra-gpu-kit stages: %s is not built in (MRA_KERNELS)\n", kCase);
    return 2;
  }
  Model model;
  std::string why;
  const std::string path = model_file.empty() ? own_directory() + "/perf-model.tsv" : model_file;
  if (!load_model(path, &model, &why)) {
    std::fprintf(stderr, "mra-gpu-kit stages: the model's estimates: %s\n", why.c_str());
    return 2;
  }
  int devices = 0;
  if (!plan && (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)) {
    std::fprintf(stderr, "mra-gpu-kit stages: no CUDA device\n");
    return 2;
  }
  std::printf("Per-stage forward times of %s, B=1 H=%lld D=64 bf16 R=(32,1): MRA = 4 refined blocks per row, mode "
              "full; exact = the same kernels with every block refined (mode sparse, budget = all pairs). Measured: "
              "CUDA events at each change of stage, median of 21 after 3 warm-ups, us%s. est.: ESTIMATED by "
              "tools/perf-model (%s), - where it has no figure.\n",
              kCase, (long long)kHeads, plan ? " (--plan: not measured, -)" : "", path.c_str());
  std::vector<std::string> summary;
  int failures = 0;
  for (const int64_t n : ns) {
    const mra_problem p = bench_problem(*e, n, kHeads);
    const mra_problem dense = dense_problem(p);
    size_t ws_mra = 0, ws_dense = 0;
    const mra_status s1 = mra_workspace_size(&p, &ws_mra), s2 = mra_workspace_size(&dense, &ws_dense);
    if (s1 != MRA_SUCCESS || s2 != MRA_SUCCESS) {
      std::printf("\nN=%lld: workspace size: %s / %s\n", (long long)n, mra_status_string(s1), mra_status_string(s2));
      ++failures;
      continue;
    }
    Measured ours, exact;
    if (!plan) {
      const size_t bytes = size_t(kHeads * n * 64) * 2;
      void* t[4] = {};
      void* ws = nullptr;
      bool ok = cudaMalloc(&ws, std::max(ws_mra, ws_dense)) == cudaSuccess;
      for (void*& x : t) ok = ok && cudaMalloc(&x, bytes) == cudaSuccess;
      if (ok) {
        // Small values keep every logit moderate; the timing does not depend on them.
        for (int i = 0; i < 3; ++i) cudaMemset(t[i], 0x11 + i, bytes);
        ours = measure(p, t, ws, ws_mra);
        exact = measure(dense, t, ws, ws_dense);
      }
      for (void* x : t) cudaFree(x);
      cudaFree(ws);
      if (!ours.ok || !exact.ok) {
        std::printf("\nN=%lld: failed: %s\n", (long long)n, cudaGetErrorString(cudaGetLastError()));
        ++failures;
        continue;
      }
    }
    std::printf("\nN=%lld (workspace: MRA %.1f MB, exact %.1f MB)\n| stage | MRA | est. | exact | est. |\n"
                "|---|---|---|---|---|\n",
                (long long)n, double(ws_mra) / 1e6, double(ws_dense) / 1e6);
    // The stages in the order they ran (with --plan: the model's).
    std::vector<std::string> order = plan ? model.stages : ours.order;
    for (const std::string& s : exact.order)
      if (std::find(order.begin(), order.end(), s) == order.end()) order.push_back(s);
    double sum_ours = plan ? kNone : 0, sum_exact = plan ? kNone : 0;
    for (const std::string& s : order) {
      const double a = median_us(ours, s), b = median_us(exact, s);
      if (!std::isnan(a)) sum_ours += a;
      if (!std::isnan(b)) sum_exact += b;
      std::printf("| %s | %s | %s | %s | %s |\n", s.c_str(), cell(a).c_str(),
                  cell(estimate(model, n, "full", s)).c_str(), cell(b).c_str(),
                  cell(estimate(model, n, "dense", s)).c_str());
    }
    const double est_mra = estimate(model, n, "full", "MRA total");
    const double est_exact = estimate(model, n, "dense", "MRA total");
    std::printf("| sum of the medians | %s | - | %s | - |\n", cell(sum_ours).c_str(), cell(sum_exact).c_str());
    std::printf("| total with the observer | %s | - | %s | - |\n", cell(1e3 * ours.observed).c_str(),
                cell(1e3 * exact.observed).c_str());
    std::printf("| **total** (no observer) | %s | %s | %s | %s |\n", cell(1e3 * ours.plain).c_str(),
                cell(est_mra).c_str(), cell(1e3 * exact.plain).c_str(), cell(est_exact).c_str());
    char line[256];
    std::snprintf(line, sizeof line, "| %lld | %s | %s | %s | %s | %s | %s | %s |", (long long)n,
                  cell(1e3 * ours.plain).c_str(), cell(est_mra).c_str(), cell(1e3 * exact.plain).c_str(),
                  cell(est_exact).c_str(), cell(exact.plain / ours.plain).c_str(),
                  cell(estimate(model, n, "full", "FlashAttention-2")).c_str(),
                  cell(estimate(model, n, "full", "FlashAttention-3")).c_str());
    summary.push_back(line);
    std::fflush(stdout);
  }
  std::printf("\nTotals (us; est. = ESTIMATED; FA2, FA3: FlashAttention-2/-3 on an H100 at their published TFLOP/s, "
              "ESTIMATED):\n| N | MRA | est. | exact | est. | exact / MRA | FA2 est. | FA3 est. |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (const std::string& l : summary) std::printf("%s\n", l.c_str());
  return failures ? 1 : 0;
}
