// Text generation for byte-level models: prompts and stop strings as bytes, the work
// done by infer::generate (a key/value cache, one decode step per token).
#include "models/train/generate.h"

#include "models/infer/generate.h"

namespace hmoe::train {

namespace {

std::vector<int64_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// The checkpoint's model, which must read bytes, and one request per prompt.
std::shared_ptr<const infer::Model> load_byte_model(const std::string& dir) {
  auto m = infer::Model::load(dir, "generate");
  HMOE_CHECK(m->config().vocab_size == 256,
             "generate: text prompts need a byte-level model (vocab 256); this model has ", m->config().vocab_size,
             " tokens");
  return m;
}

std::vector<infer::Request> requests_for(const std::vector<std::string>& prompts, const GenerateOptions& o) {
  std::vector<infer::Request> rs;
  for (const std::string& p : prompts) {
    infer::Request r;
    r.prompt = bytes_of(p.empty() ? std::string_view("\n") : std::string_view(p));
    r.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
    r.max_tokens = o.max_tokens;
    for (const std::string& s : o.stop) r.stop.push_back(bytes_of(s));
    r.window_keep = o.window_keep;
    rs.push_back(std::move(r));
  }
  return rs;
}

}  // namespace

void generate(const std::string& checkpoint_dir, const GenerateOptions& o,
              const std::function<void(std::string_view)>& out) {
  const auto m = load_byte_model(checkpoint_dir);
  std::vector<infer::Request> rs = requests_for({o.prompt}, o);
  infer::validate(rs[0], m->config().block_size);  // before the prompt is shown
  rs[0].keep_output = false;
  out(o.prompt);
  infer::generate(m, rs, [&](int64_t, int64_t token) {
    const char byte = char(token);
    out(std::string_view(&byte, 1));
  });
}

std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& o) {
  std::string text;
  generate(checkpoint_dir, o, [&](std::string_view s) { text.append(s); });
  return text;
}

std::vector<std::string> generate_texts(const std::string& checkpoint_dir, const std::vector<std::string>& prompts,
                                        const GenerateOptions& o) {
  const auto m = load_byte_model(checkpoint_dir);
  const std::vector<infer::Completion> cs = infer::generate(m, requests_for(prompts, o));
  std::vector<std::string> texts;
  for (size_t i = 0; i < prompts.size(); ++i)
    texts.push_back(prompts[i] + std::string(cs[i].tokens.begin(), cs[i].tokens.end()));
  return texts;
}

}  // namespace hmoe::train
