// The metrics file: lines built as JSON objects, written in the file's format, and
// trimmed on resume.
#include "models/train/metrics.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace hmoe::train {

namespace fs = std::filesystem;
using Line = nlohmann::ordered_json;  // keys in the order written: "step" first

namespace {

// A value as the file has always held it: ", " and ": " between items, numbers as a
// stream prints them (6 significant digits).
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
    os << v.get<double>();
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

}  // namespace

MetricsWriter::MetricsWriter(const fs::path& path, bool append)
    : out_(path, append ? std::ios::app : std::ios::trunc) {}

void MetricsWriter::step(const StepMetrics& m) {
  const Line line{{"step", m.step},
                  {"lm_loss", m.lm_loss},
                  {"aux_loss", m.aux_loss},
                  {"lr", m.lr},
                  {"grad_norm", m.grad_norm},
                  {"tokens_per_s", m.tokens_per_s},
                  {"expert_fraction", fractions(m.expert_counts)}};
  write_value(out_, line);
  out_ << '\n';
}

void MetricsWriter::eval(int64_t step, double val_loss) {
  write_value(out_, Line{{"step", step}, {"val_loss", val_loss}, {"val_perplexity", std::exp(val_loss)}});
  out_ << '\n';
}

void MetricsWriter::flush() { out_.flush(); }

void trim_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool logged = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    if (logged && j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  in.close();
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    HMOE_CHECK(out.good(), "metrics: cannot write '", tmp.string(), "'");
  }
  fs::rename(tmp, path);
}

}  // namespace hmoe::train
