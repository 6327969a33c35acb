// Small statistics shared by the benchmarks, capsule-calibrate and the test
// harness: median and percentiles of repeated measurements, and the
// least-squares line (with its R^2) that throughput-against-budget curves are
// judged by.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace capsule {

// Linear interpolation between the closest ranks; NaN for no values.
inline double percentile(std::vector<double> v, double p) {  // p in [0, 100]
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * double(v.size() - 1);
  const auto lo = std::size_t(std::floor(pos)), hi = std::size_t(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

inline double median(std::vector<double> v) { return percentile(std::move(v), 50); }

struct LinearFit {
  double slope = 0;
  double intercept = 0;
  // 1 - SS_res / SS_tot. 0 when y does not vary at all (a flat curve does
  // not follow x); NaN with fewer than two distinct x.
  double r_squared = 0;
};

// Ordinary least squares through (x[i], y[i]), centred sums (no cancellation
// when x is a fraction of a CPU and y packets per second).
inline LinearFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  LinearFit f;
  const std::size_t n = std::min(x.size(), y.size());
  f.r_squared = std::numeric_limits<double>::quiet_NaN();
  if (n == 0) return f;
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= double(n);
  my /= double(n);
  double sxx = 0, sxy = 0, syy = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  f.intercept = my;
  if (sxx <= 0) return f;  // one x only: no line through it
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  if (syy <= 0) {
    f.r_squared = 0;
    return f;
  }
  double ss_res = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double e = y[i] - (f.slope * x[i] + f.intercept);
    ss_res += e * e;
  }
  f.r_squared = 1.0 - ss_res / syy;
  return f;
}

}  // namespace capsule
