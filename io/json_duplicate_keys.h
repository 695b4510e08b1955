// The first key that appears twice in one object of a JSON text: nlohmann's DOM keeps the
// last of two equal keys silently, so a reader that must not lose one (a safetensors
// header's tensors, a params file's settings) asks this first. A SAX pass: nlohmann's
// parse callback costs a scan of the parent object per value, quadratic in the keys.
#pragma once

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

namespace wq {

struct DuplicateJsonKey {
  std::string key;   // "" when every object's keys are distinct (or the text does not parse)
  size_t depth = 0;  // of the object holding it: 1 for the top-level object
};

inline DuplicateJsonKey duplicate_json_key(const char* begin, const char* end) {
  struct Sax : nlohmann::json_sax<nlohmann::json> {
    std::vector<std::set<std::string>> open;
    DuplicateJsonKey found;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override {
      open.emplace_back();
      return true;
    }
    bool key(string_t& k) override {
      if (!open.back().insert(k).second) {
        found = {k, open.size()};
        return false;  // stop: one is enough
      }
      return true;
    }
    bool end_object() override {
      open.pop_back();
      return true;
    }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
  } sax;
  nlohmann::json::sax_parse(begin, end, &sax);
  return sax.found;
}

}  // namespace wq
