// tests/common/check.h: the one comparison rule of the test suite.
//
// Every element must satisfy |x - ref| <= atol + rtol * |ref|, and x may be NaN only where ref is NaN. The
// report names the worst element (largest fraction of its tolerance used), decoded to [b, h, n, d], the max
// absolute error and the relative Frobenius error, so a failure says where and by how much.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace mra::test {

struct Comparison {
  bool ok = true;
  double max_abs = 0.0;      // over finite pairs
  double rel_frobenius = 0.0;
  double tolerance_used = 0.0;  // max over elements of |x - ref| / (atol + rtol |ref|); <= 1 passes
  int64_t worst = -1;        // flat index of the element with the largest tolerance use
  int64_t failures = 0;
  std::string report;        // one line
};

// dims: the tensor's shape (up to 4), used to decode the worst index.
inline Comparison compare(const float* x, const float* ref, int64_t n, double atol, double rtol,
                          const std::vector<int64_t>& dims) {
  Comparison c;
  double diff2 = 0.0, ref2 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = x[i], r = ref[i];
    double used;
    if (std::isnan(r) || std::isnan(a)) {
      used = std::isnan(r) && std::isnan(a) ? 0.0 : INFINITY;
    } else {
      const double e = std::fabs(a - r);
      diff2 += e * e;
      ref2 += r * r;
      c.max_abs = std::fmax(c.max_abs, e);
      used = e / (atol + rtol * std::fabs(r));
    }
    if (used > 1.0) ++c.failures;
    if (c.worst < 0 || used > c.tolerance_used) {
      c.tolerance_used = used;
      c.worst = i;
    }
  }
  c.ok = c.failures == 0;
  c.rel_frobenius = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  std::ostringstream s;
  s << (c.ok ? "ok" : "FAIL") << ": " << c.failures << " of " << n << " elements out of tolerance (atol " << atol
    << ", rtol " << rtol << "); max abs err " << c.max_abs << ", rel Frobenius err " << c.rel_frobenius
    << ", worst ";
  if (c.worst >= 0) {
    std::vector<int64_t> idx(dims.size());
    int64_t rest = c.worst;
    for (size_t d = dims.size(); d-- > 0;) {
      idx[d] = rest % dims[d];
      rest /= dims[d];
    }
    s << "[";
    for (size_t d = 0; d < idx.size(); ++d) s << (d ? "," : "") << idx[d];
    s << "] = " << x[c.worst] << " vs " << ref[c.worst] << " (" << 100.0 * c.tolerance_used
      << "% of tolerance)";
  }
  c.report = s.str();
  return c;
}

// The squared L2 norm of a tensor, to guard against vacuous passes on all-zero data.
inline double norm2(const std::vector<float>& t) {
  double s = 0.0;
  for (float x : t) s += double(x) * x;
  return s;
}

}  // namespace mra::test
