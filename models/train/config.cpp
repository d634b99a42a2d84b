// Config loading: merges defaults, a preset, a TOML/JSON file and overrides into one
// JSON document checked key by key against the defaults' schema, then reads it into
// the typed structs (parsing the names of kinds, dtypes and devices).
#include "models/train/config.h"

#include <toml++/toml.h>

#include <array>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/io/file.h"
#include "engine/io/json.h"

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
  X(hyper_lr_scale) X(eval_every) X(eval_batches) X(log_every) X(checkpoint_every) X(seed) X(threads) X(device)   \
  X(on_nonfinite) X(out_dir)
#define HMOE_FIELDS_DIST(X) X(ep) X(backend) X(timeout_s)

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
std::string file_value(NonFinitePolicy p) { return std::string(name(p)); }
std::string file_value(dist::Backend b) { return std::string(dist::backend_name(b)); }

template <typename T>
void read_value(const json& v, T& out) {
  v.get_to(out);
}
void read_value(const json& v, model::FfnKind& out) { out = model::parse_ffn_kind(v.get<std::string>()); }
void read_value(const json& v, model::RouterKind& out) { out = model::parse_router_kind(v.get<std::string>()); }
void read_value(const json& v, std::optional<bool>& out) { out = model::parse_renormalize(v.get<std::string>()); }
void read_value(const json& v, DType& out) { out = model::parse_model_dtype(v.get<std::string>()); }
void read_value(const json& v, DeviceSetting& out) { out = parse_device_setting(v.get<std::string>()); }
void read_value(const json& v, NonFinitePolicy& out) { out = parse_nonfinite_policy(v.get<std::string>()); }
void read_value(const json& v, dist::Backend& out) { out = dist::parse_backend(v.get<std::string>()); }

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
#define X(f) j["dist"][#f] = file_value(c.dist.f);
  HMOE_FIELDS_DIST(X)
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
  // Checkpoints from before the [dist] section have none: its defaults.
  if (j.contains("dist")) {
#define X(f) read_value(j.at("dist").at(#f), c.dist.f);
    HMOE_FIELDS_DIST(X)
#undef X
  }
  return c;
}

// The sizes a preset sets (model::preset's), as config values.
json preset_values(const std::string& name) {
  const model::ModelConfig m = model::preset(name);
  if (name == "tiny") return json::object();  // the struct defaults
  return {{"n_layer", m.n_layer}, {"d_model", m.d_model},       {"n_head", m.n_head},
          {"d_ff", m.d_ff},       {"block_size", m.block_size}, {"adapter_rank", m.adapter_rank}};
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
  HMOE_CHECK(ok, "config: '", key, "' must be ", kind(schema), ", got ", kind(v), " (", io::json_brief(v), ")");
  HMOE_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()), "config: '",
             key, "' is ", io::json_brief(v), ", beyond the largest 64-bit integer");
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

// TOML as JSON; toml++ bounds the nesting itself (256 levels), and so does this at the
// JSON parser's limit, so that both formats nest alike.
json toml_to_json(const toml::node& n, int depth = 0) {
  HMOE_CHECK(depth <= io::kMaxJsonDepth, "config: TOML nested deeper than ", io::kMaxJsonDepth, " levels");
  if (auto t = n.as_table()) {
    json j = json::object();
    for (auto&& [k, v] : *t) j[std::string(k.str())] = toml_to_json(v, depth + 1);
    return j;
  }
  if (auto a = n.as_array()) {
    json j = json::array();
    for (auto&& v : *a) j.push_back(toml_to_json(v, depth + 1));
    return j;
  }
  if (auto v = n.as_integer()) return v->get();
  if (auto v = n.as_floating_point()) return v->get();
  if (auto v = n.as_boolean()) return v->get();
  if (auto v = n.as_string()) return v->get();
  HMOE_FAIL("config: unsupported TOML value (dates and times are not config values)");
}

// TOML allows characters beyond ASCII only in strings and comments. Elsewhere toml++ 3.3
// (Debian 12's) classifies them with tables that reach __builtin_unreachable for some code
// points (U+014A, say: undefined behaviour, found by fuzz_config), and so does the
// whitespace skipped after a backslash in a multi-line string. Such text is refused here,
// naming the line, before the parser sees it. A quote opens a string only at the start of
// a token, as for toml++: inside a bare value (`10"""..."""`, `+1.'...'`) it is part of
// it. So this follows keys and values: in a key, = and . end a token; in a value, only
// whitespace, commas and closing brackets do.
void check_toml_ascii(std::string_view t, const std::string& name) {
  size_t line = 1, i = 0;
  bool in_token = false;  // inside a bare token (a key, number, date, ...)
  bool value = false;     // in a value (after = or in an array), else in a key
  std::string nest;       // open brackets: [ an array, h a table header, { an inline table
  auto at = [&](size_t k, std::string_view s) { return t.substr(k, s.size()) == s; };
  auto blank = [&](size_t k) { return k < t.size() && (t[k] == ' ' || t[k] == '\t' || t[k] == '\r' || t[k] == '\n'); };
  auto refuse_beyond_ascii = [&](size_t k) {
    HMOE_CHECK(k >= t.size() || static_cast<unsigned char>(t[k]) < 0x80, "config: '", name, "' line ", line,
               ": a character beyond ASCII outside a string or comment");
  };
  // One character outside strings and comments.
  auto bare = [&](char c) {
    const bool ends = blank(i) || c == ',' || c == ']' || c == '}' || (!value && (c == '=' || c == '.'));
    if (c == '\n' && nest.empty()) value = false;
    if (!in_token && c == '[') nest += value ? '[' : 'h';
    if (!in_token && c == '{' && value) nest += '{', value = false;
    if (c == '=' && !value) value = true;
    if (c == ',' && !nest.empty()) value = nest.back() != '{';
    if ((c == ']' || c == '}') && !nest.empty()) {
      value = nest.back() != 'h';
      nest.pop_back();
    }
    in_token = !(ends || (!in_token && (c == '[' || c == '{')));
  };
  while (i < t.size()) {
    const char c = t[i];
    const bool quote = (c == '"' || c == '\'') && !in_token;
    if (c == '#') {
      while (i < t.size() && t[i] != '\n') ++i;
    } else if (quote && (at(i, "\"\"\"") || at(i, "'''"))) {  // a multi-line string
      const std::string_view close = t.substr(i, 3);
      for (i += 3; i < t.size() && !at(i, close); ++i) {
        if (t[i] == '\n') ++line;
        if (close[0] != '"' || t[i] != '\\') continue;
        if (blank(i + 1)) {  // a line-ending backslash
          while (blank(i + 1)) line += t[++i] == '\n';
          refuse_beyond_ascii(i + 1);
        } else {  // an escape: the escaped character is skipped
          refuse_beyond_ascii(++i);
        }
      }
      i += 3;
      for (int extra = 0; extra < 2 && i < t.size() && t[i] == close[0]; ++extra) ++i;  // quotes ending the text
      in_token = true;   // what follows a string must end it (a blank, a comma, ...)
    } else if (quote) {  // a one-line string
      for (++i; i < t.size() && t[i] != c && t[i] != '\n'; ++i)
        if (c == '"' && t[i] == '\\') refuse_beyond_ascii(++i);
      if (i < t.size() && t[i] == c) ++i;
      in_token = true;
    } else {
      refuse_beyond_ascii(i);
      bare(c);
      line += c == '\n';
      ++i;
    }
  }
}

json parse_text(std::string_view text, ConfigFormat format, const std::string& name) {
  if (format == ConfigFormat::toml) {
    check_toml_ascii(text, name);
    try {
      return toml_to_json(toml::parse(text, name));
    } catch (const toml::parse_error& e) {
      HMOE_FAIL("config: '", name, "' is not valid TOML: ", e.description(), " at line ", e.source().begin.line);
    }
  }
  return io::parse_json(text, "config: '" + name + "'");
}

// "model.d_model=128" -> {"model": {"d_model": 128}}; the value is read as JSON when
// it parses (numbers, booleans, lists), else as a string.
json override_json(const std::string& o) {
  const size_t eq = o.find('=');
  HMOE_CHECK(eq != std::string::npos && eq > 0, "config: override '", o, "' must look like section.key=value");
  const std::string key = o.substr(0, eq), val = o.substr(eq + 1);
  // accept() first: a value that is JSON is parsed with the limits of io::parse_json
  // (nesting, duplicate keys), one that is not is a string.
  const json v = json::accept(val) ? io::parse_json(val, "config: override '" + key + "'") : json(val);
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
  if (path.empty()) return load_config_text("{}", ConfigFormat::json, "(defaults)", overrides);
  const bool is_toml = path.size() >= 5 && path.substr(path.size() - 5) == ".toml";
  // A config is small: a larger file is a mistake (a data file given as the config).
  constexpr size_t kMaxConfigBytes = 16u << 20;
  return load_config_text(io::read_text_file(path, "config", kMaxConfigBytes),
                          is_toml ? ConfigFormat::toml : ConfigFormat::json, path, overrides);
}

Config load_config_text(std::string_view text, ConfigFormat format, const std::string& name,
                        const std::vector<std::string>& overrides) {
  const json schema = to_json(Config{});
  // Collect what the user set (checked against the schema), to learn the preset first.
  const json file = parse_text(text, format, name);
  json checked = schema;
  merge_checked(checked, file, "");
  std::vector<json> overridden;
  for (const std::string& o : overrides) {
    overridden.push_back(override_json(o));
    merge_checked(checked, overridden.back(), "");
  }
  const std::string preset = checked["model"]["preset"].get<std::string>();
  json result = schema;
  merge_checked(result["model"], preset_values(preset), "model");
  merge_checked(result, file, "");
  for (const json& o : overridden) merge_checked(result, o, "");
  Config c = from_json(result);
  validate(c);
  return c;
}

std::string config_to_json(const Config& c) { return to_json(c).dump(2); }

Config parse_config_json(const std::string& text) {
  json result = to_json(Config{});
  merge_checked(result, io::parse_json(text, "config: the stored config"), "");
  Config c = from_json(result);
  validate(c);
  return c;
}

DeviceSetting parse_device_setting(const std::string& s) {
  try {
    return {parse_device(s), s.find(':') != std::string::npos};
  } catch (const Error& e) {
    HMOE_FAIL("config: train.device: ", e.what());
  }
}

std::string DeviceSetting::str() const { return numbered || device.is_cpu() ? device.str() : "cuda"; }

std::string_view name(NonFinitePolicy p) { return p == NonFinitePolicy::skip ? "skip" : "stop"; }

NonFinitePolicy parse_nonfinite_policy(std::string_view s) {
  for (NonFinitePolicy p : {NonFinitePolicy::stop, NonFinitePolicy::skip})
    if (name(p) == s) return p;
  HMOE_FAIL("config: train.on_nonfinite must be stop or skip, got '", io::json_brief(json(std::string(s))), "'");
}

void validate(const Config& c) {
  model::validate(c.model);
  const auto& t = c.train;
  // At most this many threads: a count beyond any machine is a typo (4294967297 used to
  // wrap to 1).
  constexpr int64_t kMaxThreads = 4096;
  HMOE_CHECK(t.steps >= 1 && t.batch_size >= 1 && t.grad_accum >= 1, "config: train.steps >= 1, batch_size >= 1, ",
             "grad_accum >= 1 required");
  HMOE_CHECK(t.warmup >= 0 && t.eval_every >= 0 && t.eval_batches >= 1 && t.log_every >= 1 && t.checkpoint_every >= 0,
             "config: train.warmup, eval_every, checkpoint_every >= 0 and eval_batches, log_every >= 1 required");
  HMOE_CHECK(t.threads >= 0 && t.threads <= kMaxThreads, "config: train.threads must be in [0, ", kMaxThreads,
             "] (0: all cores), got ", t.threads);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // AdamW moves each weight by about lr a step: beyond 1 no weight of ours keeps a meaning.
  model::check_float_option("train.lr", t.lr, 0, 1, true);
  model::check_float_option("train.min_lr", t.min_lr, 0, t.lr);
  // Decoupled decay multiplies each weight by 1 - lr * weight_decay a step.
  model::check_float_option("train.weight_decay", t.weight_decay, 0, 1 / t.lr);
  model::check_float_option("train.beta1", t.beta1, 0, 1, false, true);
  model::check_float_option("train.beta2", t.beta2, 0, 1, false, true);
  model::check_float_option("train.eps", t.eps, 0, 1, true);
  model::check_float_option("train.clip", t.clip, 0, kInf);  // 0: no clipping
  model::check_float_option("train.hyper_lr_scale", t.hyper_lr_scale, 0, 1 / t.lr, true);
  HMOE_CHECK(c.data.token_width == 2 || c.data.token_width == 4, "config: data.token_width must be 2 or 4");
  model::check_float_option("data.val_fraction", c.data.val_fraction, 0, 1, true, true);
  HMOE_CHECK(c.data.tokens.empty() || c.data.text.empty(), "config: give data.text or data.tokens, not both");
  HMOE_CHECK(c.dist.ep >= 1 && c.dist.ep <= kMaxThreads, "config: dist.ep must be in [1, ", kMaxThreads, "], got ",
             c.dist.ep);
  HMOE_CHECK(c.dist.ep == 1 || (c.model.ffn != model::FfnKind::dense && c.model.n_experts % c.dist.ep == 0),
             "config: dist.ep = ", c.dist.ep, " must divide model.n_experts = ", c.model.n_experts,
             c.model.ffn == model::FfnKind::dense ? " (and a dense model has no experts to share: use dist.ep = 1)" : "");
  model::check_float_option("dist.timeout_s", c.dist.timeout_s, 0, 1e7);  // 0: no watchdog
}

void make_data_paths_canonical(Config& c) {
  auto canonical = [](const std::string& p) {
    std::error_code ec;
    const std::filesystem::path abs = std::filesystem::weakly_canonical(std::filesystem::absolute(p, ec), ec);
    return ec ? p : abs.string();
  };
  for (std::string& p : c.data.text) p = canonical(p);
  if (!c.data.tokens.empty()) c.data.tokens = canonical(c.data.tokens);
}

namespace {

// The config as flat "section.key" -> value, the keys that leave the results as they are
// left out and data paths made canonical.
std::map<std::string, json> result_settings(const Config& c) {
  const std::array<const char*, 13> kSameResults{
      "train.steps",        "train.device",          "train.threads",      "train.out_dir",
      "train.log_every",    "train.eval_every",      "train.eval_batches", "train.checkpoint_every",
      "train.on_nonfinite", "model.expert_recompute", "dist.ep",           "dist.backend",
      "dist.timeout_s"};
  Config k = c;
  make_data_paths_canonical(k);
  std::map<std::string, json> flat;
  const json j = to_json(k);
  for (auto s = j.begin(); s != j.end(); ++s)
    for (auto f = s.value().begin(); f != s.value().end(); ++f) flat[s.key() + "." + f.key()] = f.value();
  for (const char* key : kSameResults) flat.erase(key);
  return flat;
}

}  // namespace

std::vector<std::string> result_differences(const Config& checkpoint, const Config& now) {
  const std::map<std::string, json> a = result_settings(checkpoint), b = result_settings(now);
  // Values as JSON (a list of data files in full), cut short only when long.
  auto describe = [](const json& v) {
    std::string s = v.dump();
    return s.size() <= 200 ? s : io::json_brief(v, 200);
  };
  std::vector<std::string> out;
  for (const auto& [key, v] : a) {
    const json& w = b.at(key);
    if (v != w) out.push_back(key + ": " + describe(v) + " in the checkpoint, " + describe(w) + " now");
  }
  return out;
}

}  // namespace hmoe::train
