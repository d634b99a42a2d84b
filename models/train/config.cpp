// Config loading: merges defaults, a preset, a TOML/JSON file and overrides into one
// JSON document checked key by key against the defaults' schema, then reads it into
// the typed structs (parsing the names of kinds, dtypes and devices).
#include "models/train/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <toml++/toml.h>

#include "engine/device.h"
#include "engine/error.h"

namespace hmoe::train {

using nlohmann::json;

namespace {

#define HMOE_FIELDS_MODEL(X)                                                                                        \
  X(preset) X(ffn) X(moe_every) X(n_layer) X(d_model) X(n_head) X(d_ff) X(block_size) X(vocab_size) X(dropout)    \
  X(dtype) X(n_experts) X(top_k) X(router) X(renormalize) X(noisy) X(capacity_factor) X(jitter) X(aux_cv_coef)    \
  X(aux_lb_coef) X(aux_z_coef) X(expert_recompute) X(expert_emb_dim) X(selection_hidden) X(hyper_in)            \
  X(hyper_hidden) X(layer_emb_dim) X(adapter_rank)
#define HMOE_FIELDS_DATA(X) X(text) X(tokens) X(token_width) X(val_fraction)
#define HMOE_FIELDS_TRAIN(X)                                                                                       \
  X(steps) X(batch_size) X(grad_accum) X(lr) X(min_lr) X(warmup) X(weight_decay) X(beta1) X(beta2) X(eps) X(clip) \
  X(hyper_lr_scale) X(eval_every) X(eval_batches) X(log_every) X(checkpoint_every) X(seed) X(threads) X(device) X(out_dir)

// A field's value as the file writes it (kinds, dtypes and devices by name), and back:
// names are parsed here, once, with errors naming the key.
template <typename T>
const T& file_value(const T& v) {
  return v;
}
std::string file_value(model::FfnKind k) { return std::string(model::name(k)); }
std::string file_value(model::RouterKind k) { return std::string(model::name(k)); }
std::string file_value(std::optional<bool> renormalize) { return std::string(model::renormalize_name(renormalize)); }
std::string file_value(DType t) { return std::string(dtype_name(t)); }
std::string file_value(const DeviceSetting& d) { return d.str(); }

template <typename T>
void read_value(const json& v, T& out) {
  v.get_to(out);
}
void read_value(const json& v, model::FfnKind& out) { out = model::parse_ffn_kind(v.get<std::string>()); }
void read_value(const json& v, model::RouterKind& out) { out = model::parse_router_kind(v.get<std::string>()); }
void read_value(const json& v, std::optional<bool>& out) { out = model::parse_renormalize(v.get<std::string>()); }
void read_value(const json& v, DType& out) { out = model::parse_model_dtype(v.get<std::string>()); }
void read_value(const json& v, DeviceSetting& out) { out = parse_device_setting(v.get<std::string>()); }

json to_json(const Config& c) {
  json j;
#define X(f) j["model"][#f] = file_value(c.model.f);
  HMOE_FIELDS_MODEL(X)
#undef X
#define X(f) j["data"][#f] = file_value(c.data.f);
  HMOE_FIELDS_DATA(X)
#undef X
#define X(f) j["train"][#f] = file_value(c.train.f);
  HMOE_FIELDS_TRAIN(X)
#undef X
  return j;
}

Config from_json(const json& j) {
  Config c;
#define X(f) read_value(j.at("model").at(#f), c.model.f);
  HMOE_FIELDS_MODEL(X)
#undef X
#define X(f) read_value(j.at("data").at(#f), c.data.f);
  HMOE_FIELDS_DATA(X)
#undef X
#define X(f) read_value(j.at("train").at(#f), c.train.f);
  HMOE_FIELDS_TRAIN(X)
#undef X
  return c;
}

json preset_values(const std::string& name) {
  if (name == "tiny") return json::object();  // the struct defaults
  if (name == "small")
    return {{"n_layer", 6}, {"d_model", 256}, {"n_head", 8}, {"d_ff", 1024}, {"block_size", 256}, {"adapter_rank", 32}};
  if (name == "base")
    return {{"n_layer", 12}, {"d_model", 768}, {"n_head", 12}, {"d_ff", 3072}, {"block_size", 1024},
            {"adapter_rank", 64}};
  HMOE_FAIL("config: unknown model preset '", name, "' (expected tiny, small or base)");
}

const char* kind(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "a table";
  return "null";
}

// Checks `v` can stand where `schema` stands; integers are accepted for floats, and one
// string for a list of strings (data.text=file.txt).
void check_type(const std::string& key, const json& schema, json& v) {
  if (schema.is_array() && v.is_string()) v = json::array({v});
  const bool ok = (schema.is_boolean() && v.is_boolean()) ||
                  (schema.is_number_integer() && v.is_number_integer()) ||
                  (schema.is_number_float() && v.is_number()) || (schema.is_string() && v.is_string()) ||
                  (schema.is_array() && v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) {
                     return e.is_string();
                   }));
  HMOE_CHECK(ok, "config: '", key, "' must be ", kind(schema), ", got ", kind(v), " (", v.dump(), ")");
  if (schema.is_number_float()) v = v.get<double>();
}

// Merges `in` into `out`, which holds the schema (every known key with a typed value).
void merge_checked(json& out, const json& in, const std::string& where) {
  HMOE_CHECK(in.is_object(), "config: ", where.empty() ? "the file" : "'" + where + "'", " must be a table");
  for (auto it = in.begin(); it != in.end(); ++it) {
    const std::string key = where.empty() ? it.key() : where + "." + it.key();
    HMOE_CHECK(out.contains(it.key()), "config: unknown key '", key, "'");
    if (out[it.key()].is_object()) {
      merge_checked(out[it.key()], it.value(), key);
    } else {
      json v = it.value();
      check_type(key, out[it.key()], v);
      out[it.key()] = v;
    }
  }
}

json toml_to_json(const toml::node& n) {
  if (auto t = n.as_table()) {
    json j = json::object();
    for (auto&& [k, v] : *t) j[std::string(k.str())] = toml_to_json(v);
    return j;
  }
  if (auto a = n.as_array()) {
    json j = json::array();
    for (auto&& v : *a) j.push_back(toml_to_json(v));
    return j;
  }
  if (auto v = n.as_integer()) return v->get();
  if (auto v = n.as_floating_point()) return v->get();
  if (auto v = n.as_boolean()) return v->get();
  if (auto v = n.as_string()) return v->get();
  HMOE_FAIL("config: unsupported TOML value (dates and times are not config values)");
}

json read_file_json(const std::string& path) {
  std::ifstream f(path);
  HMOE_CHECK(f.good(), "config: cannot open '", path, "'");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const bool is_toml = path.size() >= 5 && path.substr(path.size() - 5) == ".toml";
  if (is_toml) {
    try {
      return toml_to_json(toml::parse(text, path));
    } catch (const toml::parse_error& e) {
      HMOE_FAIL("config: '", path, "' is not valid TOML: ", e.description(), " at line ", e.source().begin.line);
    }
  }
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    HMOE_FAIL("config: '", path, "' is not valid JSON: ", e.what());
  }
}

// "model.d_model=128" -> {"model": {"d_model": 128}}; the value is read as JSON when
// it parses (numbers, booleans, lists), else as a string.
json override_json(const std::string& o) {
  const size_t eq = o.find('=');
  HMOE_CHECK(eq != std::string::npos && eq > 0, "config: override '", o, "' must look like section.key=value");
  const std::string key = o.substr(0, eq), val = o.substr(eq + 1);
  json v;
  try {
    v = json::parse(val);
  } catch (const json::parse_error&) {
    v = val;
  }
  json root = json::object();
  json* cur = &root;
  size_t start = 0;
  for (;;) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    HMOE_CHECK(!part.empty(), "config: override '", o, "' has an empty key part");
    if (dot == std::string::npos) {
      (*cur)[part] = v;
      break;
    }
    cur = &(*cur)[part];
    start = dot + 1;
  }
  return root;
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  json user = json::object();
  json schema = to_json(Config{});
  // Collect what the user set (checked against the schema), to learn the preset first.
  json file = path.empty() ? json::object() : read_file_json(path);
  json checked = schema;
  merge_checked(checked, file, "");
  for (const std::string& o : overrides) merge_checked(checked, override_json(o), "");
  const std::string preset = checked["model"]["preset"].get<std::string>();
  json result = schema;
  merge_checked(result["model"], preset_values(preset), "model");
  merge_checked(result, file, "");
  for (const std::string& o : overrides) merge_checked(result, override_json(o), "");
  Config c = from_json(result);
  validate(c);
  return c;
}

std::string config_to_json(const Config& c) { return to_json(c).dump(2); }

Config parse_config_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    HMOE_FAIL("config: stored config is not valid JSON: ", e.what());
  }
  json result = to_json(Config{});
  merge_checked(result, j, "");
  return from_json(result);
}

DeviceSetting parse_device_setting(const std::string& s) {
  try {
    return {parse_device(s), s.find(':') != std::string::npos};
  } catch (const Error& e) {
    HMOE_FAIL("config: train.device: ", e.what());
  }
}

std::string DeviceSetting::str() const { return numbered || device.is_cpu() ? device.str() : "cuda"; }

void validate(const Config& c) {
  model::validate(c.model);
  const auto& t = c.train;
  HMOE_CHECK(t.steps >= 0 && t.batch_size >= 1 && t.grad_accum >= 1, "config: train.steps >= 0, batch_size >= 1, ",
             "grad_accum >= 1 required");
  HMOE_CHECK(t.lr > 0 && t.min_lr >= 0 && t.min_lr <= t.lr, "config: need 0 <= train.min_lr <= train.lr, lr > 0");
  HMOE_CHECK(t.warmup >= 0 && t.eval_every >= 0 && t.eval_batches >= 1 && t.log_every >= 1 && t.checkpoint_every >= 0,
             "config: train.warmup, eval_every, checkpoint_every >= 0 and eval_batches, log_every >= 1 required");
  HMOE_CHECK(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1 && t.eps > 0 && t.clip >= 0 &&
                 t.weight_decay >= 0,
             "config: bad optimiser settings (betas in [0, 1), eps > 0, clip >= 0, weight_decay >= 0)");
  HMOE_CHECK(t.hyper_lr_scale > 0, "config: train.hyper_lr_scale must be > 0, got ", t.hyper_lr_scale);
  HMOE_CHECK(t.threads >= 0, "config: train.threads must be >= 0");
  HMOE_CHECK(c.data.token_width == 2 || c.data.token_width == 4, "config: data.token_width must be 2 or 4");
  HMOE_CHECK(c.data.val_fraction > 0 && c.data.val_fraction < 1, "config: data.val_fraction must be in (0, 1)");
  HMOE_CHECK(c.data.tokens.empty() || c.data.text.empty(), "config: give data.text or data.tokens, not both");
}

}  // namespace hmoe::train
