#include "fit.h"

#include <cmath>
#include <cstddef>
#include <limits>

namespace capsule::calibrate {

LinearFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  LinearFit f;
  const std::size_t n = x.size() < y.size() ? x.size() : y.size();
  if (n == 0) {
    f.r_squared = std::numeric_limits<double>::quiet_NaN();
    return f;
  }
  // Centred sums: no cancellation when x is small and y is large (fractions
  // of a CPU against packets per second).
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
  if (sxx <= 0) {  // one x only: no line through it
    f.intercept = my;
    f.r_squared = std::numeric_limits<double>::quiet_NaN();
    return f;
  }
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

}  // namespace capsule::calibrate
