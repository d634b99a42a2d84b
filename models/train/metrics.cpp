// The metrics file: lines built as JSON objects, written in the file's format, and
// trimmed on resume.
#include "models/train/metrics.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/io/json.h"

namespace hmoe::train {

namespace fs = std::filesystem;
using Line = nlohmann::ordered_json;  // keys in the order written: "step" first

namespace {

// A value as the file has always held it: ", " and ": " between items, numbers as a
// stream prints them (6 significant digits), except that a number that is not finite is
// null (a stream would print nan or inf, which no JSON reader accepts).
void write_value(std::ostream& os, const Line& v) {
  if (v.is_object() || v.is_array()) {
    os << (v.is_object() ? '{' : '[');
    const char* sep = "";
    for (auto it = v.begin(); it != v.end(); ++it, sep = ", ") {
      os << sep;
      if (v.is_object()) os << nlohmann::json(it.key()).dump() << ": ";
      write_value(os, it.value());
    }
    os << (v.is_object() ? '}' : ']');
  } else if (v.is_number_float()) {
    if (std::isfinite(v.get<double>()))
      os << v.get<double>();
    else
      os << "null";
  } else {
    os << v.dump();
  }
}

Line fractions(const std::vector<std::vector<int64_t>>& counts) {
  Line layers = Line::array();
  for (const std::vector<int64_t>& layer : counts) {
    int64_t total = 0;
    for (int64_t v : layer) total += v;
    Line f = Line::array();
    for (int64_t v : layer) f.push_back(total ? double(v) / double(total) : 0.0);
    layers.push_back(f);
  }
  return layers;
}

// One line: the value and a newline.
std::string line_of(const Line& v) {
  std::ostringstream os;
  write_value(os, v);
  os << '\n';
  return os.str();
}

}  // namespace

MetricsWriter::MetricsWriter(const fs::path& path, bool append) : out_(path.string(), !append, "metrics") {}

void MetricsWriter::step(const StepMetrics& m) {
  Line line{{"step", m.step},
            {"lm_loss", m.lm_loss},
            {"aux_loss", m.aux_loss},
            {"lr", m.lr},
            {"grad_norm", m.grad_norm},
            {"tokens_per_s", m.tokens_per_s},
            {"expert_fraction", fractions(m.expert_counts)}};
  if (m.skipped) line["skipped"] = true;
  out_.write(line_of(line));
}

void MetricsWriter::eval(int64_t step, double val_loss) {
  out_.write(line_of(Line{{"step", step}, {"val_loss", val_loss}, {"val_perplexity", std::exp(val_loss)}}));
}

void MetricsWriter::sync() { out_.sync(); }

void trim_metrics(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  const std::string all = io::read_text_file(path.string(), "metrics");
  std::string kept;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j;
    try {
      j = io::parse_json(line, "metrics");
    } catch (const Error&) {  // a line cut short by a crash: not logged
    }
    const bool logged = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    if (logged && j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  io::write_file_atomic(path.string(), kept, "metrics");
}

}  // namespace hmoe::train
