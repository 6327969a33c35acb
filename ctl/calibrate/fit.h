// Straight-line least squares for capsule-calibrate: y = slope * x + intercept
// and the fit's coefficient of determination.
#pragma once

#include <vector>

namespace capsule::calibrate {

struct LinearFit {
  double slope = 0;
  double intercept = 0;
  // 1 - SS_res / SS_tot. 0 when y does not vary at all (a flat curve does not
  // follow x, which is what the caller asks about); NaN with fewer than two
  // distinct x.
  double r_squared = 0;
};

// Ordinary least squares through the points (x[i], y[i]); x and y have the
// same length.
LinearFit fit_line(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace capsule::calibrate
