// tools/mra-ref/plot.cpp: the SVG pictures declared in plot.h and `mra-ref plot`. Tested by tests/cli
// (plot_test.py).
#include "plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "commands.h"
#include "inputs.h"
#include "output.h"

namespace mra::cli {
namespace {

// Colours of the refinement levels and of the sweep's scale sets (distinguishable, also in grey print).
const char* const kPalette[] = {"#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f"};
const char* colour(size_t i) { return kPalette[i % (sizeof kPalette / sizeof kPalette[0])]; }

std::string xml_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else if (static_cast<unsigned char>(c) >= 0x20) out += c;  // XML 1.0 forbids most control characters
  }
  return out;
}

// Coordinates to 1/100 px, trailing zeros dropped: the selection picture has thousands of rects.
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

// A minimal SVG document: elements appended as text, closed by `finish`.
class Svg {
 public:
  Svg(double width, double height) {
    text_ = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
            num(width) + "\" height=\"" + num(height) + "\" viewBox=\"0 0 " + num(width) + " " + num(height) +
            "\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n" +
            "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  }

  void rect(double x, double y, double w, double h, const std::string& attributes) {
    text_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) + "\" " +
             attributes + "/>\n";
  }

  void line(double x1, double y1, double x2, double y2, const std::string& attributes) {
    text_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) + "\" " +
             attributes + "/>\n";
  }

  void text(double x, double y, const std::string& content, const std::string& attributes = "") {
    text_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" " + attributes + ">" + xml_escape(content) + "</text>\n";
  }

  void raw(const std::string& element) { text_ += element + "\n"; }

  std::string finish() { return text_ + "</svg>\n"; }

 private:
  std::string text_;
};

// Coarse blocks are shaded by their log-coefficient relative to the best of their block row, over this many
// natural-log units: the coefficients themselves (exp) fall off so fast that all but the best look white.
constexpr double kLogRange = 8.0;

// White to dark blue, t in [0, 1].
std::string blue(double t) {
  const auto mix = [t](int from, int to) { return static_cast<int>(std::lround(from + (to - from) * t)); };
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", mix(255, 8), mix(255, 48), mix(255, 107));
  return buf;
}

std::string mode_name(ref::Mode m) { return m == ref::Mode::full ? "full" : "sparse"; }

// "1e-3" style labels of decades.
std::string decade(int e) { return e == 0 ? "1" : "1e" + std::to_string(e); }

}  // namespace

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff2 = 0.0, ref2 = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff2 += d * d;
    ref2 += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return ref2 > 0.0 ? std::sqrt(diff2 / ref2) : (diff2 == 0.0 ? 0.0 : std::numeric_limits<double>::infinity());
}

std::string selection_svg(const ref::Problem& p, const ref::Config& c, const ref::Selection& s, int64_t b, int64_t h,
                          const std::string& title) {
  const ref::Pooled coarse = ref::pool(p, c.scales.front());
  const int64_t rows = coarse.nq_blocks, cols = coarse.nk_blocks;
  // One pixel scale for both axes, the longer side 600 px.
  const double unit = 600.0 / static_cast<double>(std::max(p.nq, p.nk));
  const double left = 70, top = 60, width = unit * static_cast<double>(p.nk), height = unit * static_cast<double>(p.nq);
  const double legend = left + width + 30;
  Svg svg(legend + 360, top + std::max(height, 260.0) + 60);
  svg.text(left, 28, title, "font-size=\"14\" font-weight=\"bold\"");

  // Coarse coefficients relative to the best of their block row; inactive pairs (no real query or key) grey.
  std::vector<double> logits(static_cast<size_t>(cols));
  bool inactive = false;
  for (int64_t r = 0; r < rows; ++r) {
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t col = 0; col < cols; ++col) {
      logits[static_cast<size_t>(col)] = ref::coarse_logit(p, coarse, b, h, r, col);
      best = std::max(best, logits[static_cast<size_t>(col)]);
    }
    for (int64_t col = 0; col < cols; ++col) {
      const double l = logits[static_cast<size_t>(col)];
      inactive = inactive || std::isinf(l);
      const std::string fill = std::isinf(l) ? "#dddddd" : blue(std::max(0.0, 1.0 + (l - best) / kLogRange));
      const double side = unit * static_cast<double>(coarse.side);
      svg.rect(left + side * static_cast<double>(col), top + side * static_cast<double>(r),
               std::min(side, width - side * static_cast<double>(col)), std::min(side, height - side * static_cast<double>(r)),
               "class=\"coarse\" fill=\"" + fill + "\"");
    }
  }
  // The refined blocks of each level, coarsest first so that finer levels lie on top.
  for (int64_t l = 0; l < s.steps; ++l) {
    const int64_t side_tokens = c.scales[static_cast<size_t>(l)];
    const int64_t nk_blocks = (p.nk + side_tokens - 1) / side_tokens;
    const double side = unit * static_cast<double>(side_tokens);
    const std::string attributes = "class=\"level-" + std::to_string(l + 1) + "\" fill=\"" + colour(static_cast<size_t>(l)) +
                                   "\" fill-opacity=\"0.35\" stroke=\"" + colour(static_cast<size_t>(l)) +
                                   "\" stroke-width=\"" + num(std::max(0.4, 1.5 - 0.5 * static_cast<double>(l))) + "\"";
    for (const int64_t flat : s.at(b, h, l)) {
      const double x = side * static_cast<double>(flat % nk_blocks), y = side * static_cast<double>(flat / nk_blocks);
      svg.rect(left + x, top + y, std::min(side, width - x), std::min(side, height - y), attributes);
    }
  }
  svg.rect(left, top, width, height, "fill=\"none\" stroke=\"#000000\" stroke-width=\"1\"");
  svg.text(left + width / 2, top + height + 34, "key position", "text-anchor=\"middle\"");
  svg.text(left - 40, top + height / 2, "query position",
           "text-anchor=\"middle\" transform=\"rotate(-90 " + num(left - 40) + " " + num(top + height / 2) + ")\"");
  svg.text(left, top + height + 16, "0", "text-anchor=\"middle\"");
  svg.text(left + width, top + height + 16, std::to_string(p.nk), "text-anchor=\"middle\"");
  svg.text(left - 6, top + 4, "0", "text-anchor=\"end\"");
  svg.text(left - 6, top + height + 4, std::to_string(p.nq), "text-anchor=\"end\"");

  // Legend: the coefficient scale, then one swatch per level.
  double y = top + 4;
  svg.text(legend, y, "coarse blocks, side " + std::to_string(coarse.side) + ":");
  svg.text(legend, y + 16, "log(coefficient / best of its block row)");
  svg.raw("<defs><linearGradient id=\"coefficient\"><stop offset=\"0\" stop-color=\"" + blue(0) +
          "\"/><stop offset=\"1\" stop-color=\"" + blue(1) + "\"/></linearGradient></defs>");
  svg.rect(legend, y + 24, 200, 14, "fill=\"url(#coefficient)\" stroke=\"#000000\" stroke-width=\"0.5\"");
  svg.text(legend, y + 52, "-" + std::to_string(static_cast<int>(kLogRange)) + " or less");
  svg.text(legend + 200, y + 52, "0", "text-anchor=\"end\"");
  y += 80;
  for (int64_t l = 0; l < s.steps; ++l) {
    const size_t at = static_cast<size_t>(l);
    svg.rect(legend, y - 11, 14, 14, "fill=\"" + std::string(colour(at)) + "\" fill-opacity=\"0.35\" stroke=\"" +
                                         colour(at) + "\"");
    svg.text(legend + 22, y, "level " + std::to_string(l + 1) + ": " + std::to_string(s.at(b, h, l).size()) +
                                 " blocks of side " + std::to_string(c.scales[at]) + " refined to side " +
                                 std::to_string(c.scales[at + 1]));
    y += 22;
  }
  if (inactive) {
    svg.rect(legend, y - 11, 14, 14, "fill=\"#dddddd\"");
    svg.text(legend + 22, y, "inactive (padding only)");
  }
  return svg.finish();
}

std::vector<SweepPoint> sweep(const ref::Problem& p, const std::vector<float>& exact,
                              const std::vector<std::vector<int64_t>>& scale_sets,
                              const std::vector<int64_t>& blocks_per_row) {
  std::vector<SweepPoint> points;
  std::vector<float> out(exact.size());
  for (const std::vector<int64_t>& scales : scale_sets) {
    for (const ref::Mode mode : {ref::Mode::full, ref::Mode::sparse}) {
      std::vector<int64_t> previous;
      for (const int64_t r : blocks_per_row) {
        ref::Config c;
        c.scales = scales;
        c.mode = mode;
        c.budgets = ref::budgets_from_blocks_per_row(scales, p.nq, p.nk, r);
        if (c.budgets == previous) continue;  // capped: the same configuration again
        previous = c.budgets;
        const ref::Selection s = ref::select(p, c);
        ref::attend(p, c, s, out.data());
        points.push_back({scales, mode, r, ref::coverage(p, c, s).exact_fraction(), relative_error(out, exact)});
      }
    }
  }
  return points;
}

std::string error_svg(const std::vector<SweepPoint>& points, const std::string& title) {
  const double left = 80, top = 60, width = 560, height = 400;
  Svg svg(left + width + 250, top + height + 70);
  svg.text(left, 28, title, "font-size=\"14\" font-weight=\"bold\"");

  // Log axes spanning whole decades around the data; an error of 0 sits on the bottom edge.
  double min_x = 1.0, min_y = std::numeric_limits<double>::infinity(), max_y = 0.0;
  for (const SweepPoint& pt : points) {
    if (pt.exact_fraction > 0) min_x = std::min(min_x, pt.exact_fraction);
    if (pt.relative_error > 0) min_y = std::min(min_y, pt.relative_error);
    max_y = std::max(max_y, pt.relative_error);
  }
  const int x0 = static_cast<int>(std::floor(std::log10(min_x))) - (min_x == 1.0 ? 1 : 0), x1 = 0;
  const int y0 = std::isfinite(min_y) ? static_cast<int>(std::floor(std::log10(min_y))) : -8;
  const int y1 = max_y > 0 ? std::max(y0 + 1, static_cast<int>(std::ceil(std::log10(max_y)))) : y0 + 1;
  const auto px = [&](double f) {
    const double e = std::clamp(std::log10(std::max(f, 1e-300)), static_cast<double>(x0), static_cast<double>(x1));
    return left + width * (e - x0) / (x1 - x0);
  };
  const auto py = [&](double v) {
    const double e = std::clamp(std::log10(std::max(v, 1e-300)), static_cast<double>(y0), static_cast<double>(y1));
    return top + height * (y1 - e) / (y1 - y0);
  };
  for (int e = x0; e <= x1; ++e) {
    svg.line(px(std::pow(10.0, e)), top, px(std::pow(10.0, e)), top + height, "stroke=\"#dddddd\"");
    svg.text(px(std::pow(10.0, e)), top + height + 16, decade(e), "text-anchor=\"middle\"");
  }
  for (int e = y0; e <= y1; ++e) {
    svg.line(left, py(std::pow(10.0, e)), left + width, py(std::pow(10.0, e)), "stroke=\"#dddddd\"");
    svg.text(left - 6, py(std::pow(10.0, e)) + 4, decade(e), "text-anchor=\"end\"");
  }
  svg.rect(left, top, width, height, "fill=\"none\" stroke=\"#000000\"");
  svg.text(left + width / 2, top + height + 40, "fraction of attention entries computed exactly (log)", "text-anchor=\"middle\"");
  svg.text(left - 55, top + height / 2, "relative error ||MRA - exact|| / ||exact|| (log)",
           "text-anchor=\"middle\" transform=\"rotate(-90 " + num(left - 55) + " " + num(top + height / 2) + ")\"");

  // One series per (scale set, mode), in the order of the points, drawn along increasing exact fraction.
  std::vector<std::pair<std::vector<int64_t>, ref::Mode>> series;
  std::map<std::vector<int64_t>, size_t> set_colour;
  for (const SweepPoint& pt : points) {
    if (std::find(series.begin(), series.end(), std::make_pair(pt.scales, pt.mode)) == series.end())
      series.emplace_back(pt.scales, pt.mode);
    set_colour.emplace(pt.scales, set_colour.size());
  }
  double legend_y = top + 10;
  for (const auto& [scales, mode] : series) {
    std::vector<SweepPoint> line;
    for (const SweepPoint& pt : points)
      if (pt.scales == scales && pt.mode == mode) line.push_back(pt);
    std::sort(line.begin(), line.end(), [](const SweepPoint& a, const SweepPoint& b) { return a.exact_fraction < b.exact_fraction; });
    const std::string stroke = colour(set_colour[scales]);
    const std::string dash = mode == ref::Mode::sparse ? " stroke-dasharray=\"6 4\"" : "";
    std::string coordinates;
    for (const SweepPoint& pt : line) coordinates += num(px(pt.exact_fraction)) + "," + num(py(pt.relative_error)) + " ";
    svg.raw("<polyline class=\"series\" points=\"" + coordinates + "\" fill=\"none\" stroke=\"" + stroke +
            "\" stroke-width=\"2\"" + dash + "/>");
    for (const SweepPoint& pt : line)
      svg.raw("<circle class=\"point\" cx=\"" + num(px(pt.exact_fraction)) + "\" cy=\"" + num(py(pt.relative_error)) +
              "\" r=\"3.5\" fill=\"" + (mode == ref::Mode::full ? stroke : std::string("#ffffff")) + "\" stroke=\"" +
              stroke + "\"><title>" + xml_escape(join(scales, ",") + " " + mode_name(mode) + ", blocks per row " +
                                                 std::to_string(pt.blocks_per_row)) + "</title></circle>");
    svg.line(left + width + 20, legend_y, left + width + 50, legend_y, "stroke=\"" + stroke + "\" stroke-width=\"2\"" + dash);
    svg.text(left + width + 58, legend_y + 4, "scales " + join(scales, ",") + ", " + mode_name(mode));
    legend_y += 20;
  }
  svg.text(left + width + 20, legend_y + 10, "points: blocks per row", "fill=\"#555555\"");
  svg.text(left + width + 20, legend_y + 26, "solid: full (MRA-L); dashed: sparse", "fill=\"#555555\"");
  return svg.finish();
}

int run_plot(const Options& options, const std::string&) {
  const auto& args = options.positional();
  if (args.size() != 1 || (args[0] != "selection" && args[0] != "error"))
    throw Failure("plot", "expects one of: selection, error (mra-ref plot --help)");
  const bool selection = args[0] == "selection";
  const std::string out_path = options.require("-o");
  npy::Output out(out_path);  // opened before any work, so that a bad path fails at once
  if (!out.error().empty()) throw Failure(out_path, out.error());
  refuse_output_over_inputs(options, "-o", out_path);
  std::FILE* report = out.to_stdout() ? stderr : stdout;  // the summary goes where the picture does not
  const auto write = [&](const std::string& svg) {
    const std::string error = out.commit(svg);
    if (!error.empty()) throw Failure(out_path, error);
  };
  const std::vector<std::string> foreign = selection ? std::vector<std::string>{"--scale-sets"}
                                                     : std::vector<std::string>{"--scales", "--budget", "--mode",
                                                                                "--prior-first", "--prior-diagonal",
                                                                                "--policy", "--selection", "--causal", "--batch",
                                                                                "--head"};
  for (const std::string& flag : foreign)
    if (options.has(flag)) throw Failure(flag, "is not an option of plot " + args[0]);
  const Inputs in = load_inputs(options);
  const ref::Problem p = in.problem();

  if (selection) {
    const ref::Config c = load_config(options, in.nq, in.nk);
    const int64_t b = options.has("--batch") ? parse_int("--batch", *options.get("--batch"), 0) : 0;
    const int64_t h = options.has("--head") ? parse_int("--head", *options.get("--head"), 0) : 0;
    if (b >= in.batch) throw Failure("--batch", std::to_string(b) + " is not below the batch size " + std::to_string(in.batch));
    if (h >= in.heads) throw Failure("--head", std::to_string(h) + " is not below the head count " + std::to_string(in.heads));
    // Every coarse block is one SVG element: beyond a million the picture is no longer viewable.
    const int64_t side = c.scales.front();
    const double coarse_blocks = std::ceil(double(in.nq) / double(side)) * std::ceil(double(in.nk) / double(side));
    if (coarse_blocks > 1e6)
      throw Failure("--scales", "a picture of " + std::to_string(static_cast<int64_t>(coarse_blocks)) +
                                    " coarse blocks is too large to view (at most 1000000: use a larger first scale)");
    const ref::Selection s = ref::select(p, c);
    const double exact = ref::coverage(p, c, s).exact_fraction();
    char fraction[32];
    std::snprintf(fraction, sizeof fraction, "%.4f", exact);
    const std::string title = "MRA selection, batch " + std::to_string(b) + ", head " + std::to_string(h) + ": scales " +
                              join(c.scales, ",") + ", budgets " + join(c.budgets, ",") + ", " + mode_name(c.mode) +
                              "; " + fraction + " of the entries exact";
    write(selection_svg(p, c, s, b, h, title));
    std::fprintf(report, "wrote %s: %s\n", printable(out_path).c_str(), title.c_str());
    return 0;
  }

  std::vector<std::vector<int64_t>> scale_sets;
  const std::string sets = options.get("--scale-sets").value_or("32,1:16,4,1:64,8,1");
  for (size_t start = 0;;) {
    const size_t colon = sets.find(':', start);
    ref::Config c;
    c.scales = parse_int_list("--scale-sets", sets.substr(start, colon - start), 1);
    c.budgets.assign(c.scales.size() - 1, 0);
    try {
      c.validate();
    } catch (const ref::Error& e) {
      throw Failure("--scale-sets", e.what());
    }
    scale_sets.push_back(c.scales);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  const std::vector<int64_t> per_row = parse_int_list("--blocks-per-row", options.get("--blocks-per-row").value_or("1,2,4,8,16"), 0);
  std::vector<float> exact(in.q.size());
  ref::exact_attention(p, exact.data());
  std::vector<SweepPoint> points;
  try {
    points = sweep(p, exact, scale_sets, per_row);
  } catch (const ref::Error& e) {
    throw Failure("--scale-sets", e.what());
  }
  std::fprintf(report, "%-14s %-7s %14s %12s %12s\n", "scales", "mode", "blocks/row", "exact frac.", "rel. error");
  for (const SweepPoint& pt : points)
    std::fprintf(report, "%-14s %-7s %14lld %12.4f %12.3e\n", join(pt.scales, ",").c_str(), mode_name(pt.mode).c_str(),
                static_cast<long long>(pt.blocks_per_row), pt.exact_fraction, pt.relative_error);
  const std::string title = "MRA error against budget: B " + std::to_string(in.batch) + ", H " + std::to_string(in.heads) +
                            ", Nq " + std::to_string(in.nq) + ", Nk " + std::to_string(in.nk) + ", D " + std::to_string(in.dim);
  write(error_svg(points, title));
  std::fprintf(report, "wrote %s\n", printable(out_path).c_str());
  return 0;
}

}  // namespace mra::cli
