#include "io/safetensors_reader.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/error.h"
#include "io/json_duplicate_keys.h"
#include "io/mapped_file.h"
#include "io/quant_record.h"
#include "io/safetensors_types.h"

namespace wq {
namespace {

using nlohmann::json;

// A header over 100 MiB is not a model header; refusing it early keeps a hostile
// length from making us parse (or allocate) gigabytes.
constexpr uint64_t kMaxHeader = 100ull << 20;

// Parses JSON text, refusing a key that appears twice in one object (a tensor, or
// __metadata__, would be lost). `file` names the error.
json parse_strict(const uint8_t* begin, const uint8_t* end, const std::string& file, const std::string& what) {
  json j;
  try {
    j = json::parse(begin, end);
  } catch (const json::exception& e) {
    throw Error(file + ": " + what + " does not parse as JSON: " + e.what());
  }
  const DuplicateJsonKey dup = duplicate_json_key(reinterpret_cast<const char*>(begin), reinterpret_cast<const char*>(end));
  if (!dup.key.empty()) {
    if (dup.depth == 1 && dup.key != "__metadata__") {
      throw Error(file + ": " + dup.key + ": the tensor appears twice in " + what);
    }
    throw Error(file + ": " + dup.key + " appears twice in one object of " + what);
  }
  return j;
}

// weight_map of a sharded checkpoint's index: tensor name -> shard file name.
using WeightMap = std::map<std::string, std::string>;

struct Entry {
  TensorInfo info;
  size_t shard = 0;
  uint64_t offset = 0;  // absolute, in the shard file
  // A wquant-quantized tensor (kind Quantized): its record and its stored pieces
  // (.qweight, .scales, .zeros), which are entries of their own in `pieces_`.
  std::string record;
  std::vector<Entry> parts;
};

class SafetensorsReader final : public ModelReader {
 public:
  SafetensorsReader(std::string path, std::vector<std::string> shard_paths, const WeightMap* weight_map)
      : path_(std::move(path)) {
    std::set<std::string> names;
    for (size_t s = 0; s < shard_paths.size(); ++s) {
      files_.push_back(std::make_unique<MappedFile>(shard_paths[s]));
      parse_shard(s, names);
    }
    if (weight_map) check_index(*weight_map, names);
    if (auto v = metadata_.find("wquant.format_version"); v != metadata_.end()) {
      if (v->second != "1") {
        throw Error(path_ + ": wquant.format_version \"" + v->second + "\" is not supported (this wquant reads 1)");
      }
      group_quantized();
    }
    for (const Entry& e : entries_) infos_.push_back(e.info);
  }

  const char* format() const override { return "safetensors"; }
  const std::string& path() const override { return path_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  std::map<std::string, std::string> string_metadata() const override { return metadata_; }

  TensorView view(size_t i) override {
    const Entry& e = at(i);
    if (e.info.kind != StoredKind::Float) {
      throw Error(files_[e.shard]->path() + ": " + e.info.name + ": is " + e.info.type_name + ", not a float tensor");
    }
    TensorView v;
    v.name = e.info.name;
    v.shape = e.info.shape;
    v.dtype = e.info.dtype;
    v.nbytes = e.info.nbytes;
    v.data = files_[e.shard]->span(e.offset, e.info.nbytes, e.info.name);
    v.mapped = files_[e.shard]->source();
    if (reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype) != 0) {
      // The format does not promise aligned data (headers are usually padded to 8, but
      // need not be): a misaligned tensor is copied once, so no kernel reads a float
      // through a misaligned pointer.
      std::lock_guard<std::mutex> lock(aligned_mutex_);
      std::vector<float>& copy = aligned_[i];
      copy.resize((v.nbytes + 3) / 4);
      std::memcpy(copy.data(), v.data, v.nbytes);
      v.data = copy.data();
      v.mapped = {};
    }
    return v;
  }

  const uint8_t* raw(size_t i, size_t* nbytes) override {
    const Entry& e = at(i);
    *nbytes = e.info.nbytes;
    return files_[e.shard]->span(e.offset, e.info.nbytes, e.info.name);
  }

  MappedSource raw_mapping(size_t i) override { return files_[at(i).shard]->source(); }
  std::string file_of(size_t i) const override { return files_[at(i).shard]->path(); }

  void release(size_t i) override {
    const Entry& e = at(i);
    files_[e.shard]->release(e.offset, e.info.nbytes);
    std::lock_guard<std::mutex> lock(aligned_mutex_);
    aligned_.erase(i);
  }

  QuantizedTensor load_quantized(size_t i) override {
    const Entry& e = at(i);
    if (e.info.kind != StoredKind::Quantized) return ModelReader::load_quantized(i);
    // Each piece is read from its own shard: a re-sharded file may put NAME.scales and
    // NAME.zeros in another shard than NAME.qweight.
    const MappedFile& f = *files_[e.shard];
    QuantizedTensor q = parse_quant_record(e.record, e.info.name, f.path());
    const size_t nb = q.rows * q.blocks_per_row();
    const Entry& codes = e.parts[0];
    const MappedFile& fc = *files_[codes.shard];
    if (codes.info.type_name != "U8")
      throw Error(fc.path() + ": " + codes.info.name + ": " + codes.info.type_name + ", where wquant's codes are U8");
    if (codes.info.nbytes != q.rows * q.packed_row_bytes)
      throw Error(fc.path() + ": " + codes.info.name + ": " + std::to_string(codes.info.nbytes) + " bytes, the record says " + std::to_string(q.rows * q.packed_row_bytes));
    const uint8_t* c = fc.span(codes.offset, codes.info.nbytes, codes.info.name);
    q.packed.assign(c, c + codes.info.nbytes);
    // The stored values: f32 into out, or f16 halves into half (widen_f16_params, engine).
    auto params = [&](const Entry& part, OutputVector<float>& out, std::vector<uint16_t>& half) {
      const MappedFile& fp = *files_[part.shard];
      const size_t es = q.spec.fp16 ? 2 : 4;
      if (part.info.nbytes != nb * es || part.info.type_name != (q.spec.fp16 ? "F16" : "F32"))
        throw Error(fp.path() + ": " + part.info.name + ": " + part.info.type_name + " of " + std::to_string(part.info.nbytes) + " bytes does not hold " + std::to_string(nb) + " block parameters");
      const uint8_t* d = fp.span(part.offset, part.info.nbytes, part.info.name);
      if (q.spec.fp16) {
        half.resize(nb);
        std::memcpy(half.data(), d, nb * 2);
      } else {
        out.resize(nb);
        std::memcpy(out.data(), d, nb * 4);
      }
    };
    params(e.parts[1], q.scales, q.scales_f16);
    if (q.scheme != Scheme::MnnSym) {
      if (e.parts.size() < 3) throw Error(f.path() + ": " + e.info.name + ": no .zeros for an asymmetric tensor");
      params(e.parts[2], q.zeros, q.zeros_f16);
    }
    return q;
  }

 private:
  const Entry& at(size_t i) const {
    if (i >= entries_.size()) throw Error(path_ + ": no tensor #" + std::to_string(i), ErrorKind::Internal);
    return entries_[i];
  }

  // Every tensor of every shard is in the index, in its own shard, and every tensor of
  // the index is in its shard: otherwise a reader of the index sees another model.
  void check_index(const WeightMap& wm, const std::set<std::string>& names) const {
    for (const Entry& e : entries_) {
      const std::string shard = std::filesystem::path(files_[e.shard]->path()).filename().string();
      const auto it = wm.find(e.info.name);
      if (it == wm.end()) {
        throw Error(path_ + ": " + e.info.name + ": is in shard " + shard + " but not in the index's weight_map");
      }
      if (it->second != shard) {
        throw Error(path_ + ": " + e.info.name + ": the index puts it in " + it->second + ", but it is in " + shard);
      }
    }
    for (const auto& [name, shard] : wm) {
      if (!names.count(name)) throw Error(path_ + ": " + name + ": the index lists it in " + shard + ", which does not hold it");
    }
  }

  void parse_shard(size_t s, std::set<std::string>& names) {
    const MappedFile& f = *files_[s];
    const std::string& p = f.path();
    uint64_t hlen;
    std::memcpy(&hlen, f.span(0, 8, "header length"), 8);
    if (hlen > kMaxHeader) {
      throw Error(p + ": header length " + std::to_string(hlen) + " is absurd (over 100 MiB): not a safetensors file or corrupt");
    }
    const uint8_t* h = f.span(8, hlen, "JSON header");
    const uint64_t data_start = 8 + hlen;
    const json header = parse_strict(h, h + hlen, p, "the JSON header");
    if (!header.is_object()) throw Error(p + ": the JSON header is not an object");
    std::vector<Entry> shard_entries;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key().empty()) throw Error(p + ": a tensor has an empty name");
      // Written to GGUF or read by C code, "a\0x" would become "a".
      if (it.key().find('\0') != std::string::npos) throw Error(p + ": " + it.key() + ": the tensor name holds a NUL byte");
      if (it.key() == "__metadata__") {
        if (!it->is_object()) throw Error(p + ": __metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) throw Error(p + ": __metadata__." + m.key() + " is not a string");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      shard_entries.push_back(parse_entry(p, it.key(), *it, data_start, f.size()));
      shard_entries.back().shard = s;
      if (!names.insert(it.key()).second) throw Error(p + ": tensor " + it.key() + " appears twice");
    }
    // (Stable: tensors at one offset, empty ones, keep the header's order.)
    std::stable_sort(shard_entries.begin(), shard_entries.end(),
                     [](const Entry& a, const Entry& b) { return a.offset < b.offset; });
    // A tensor of no bytes overlaps nothing: it may share its offset with the next one, or
    // sit anywhere (serializers that order by dtype put an empty f32 [0] before the f16 at
    // its offset).
    const Entry* last = nullptr;  // the non-empty tensor that ends furthest so far
    for (const Entry& e : shard_entries) {
      if (e.info.nbytes == 0) continue;
      if (last && e.offset < last->offset + last->info.nbytes) {
        throw Error(p + ": tensors " + last->info.name + " and " + e.info.name + " overlap");
      }
      last = &e;
    }
    entries_.insert(entries_.end(), shard_entries.begin(), shard_entries.end());
  }

  // Folds NAME.qweight / NAME.scales / NAME.zeros of a wquant output into one tensor
  // NAME of kind Quantized, at the position of its codes.
  void group_quantized() {
    std::map<std::string, size_t> by_name;
    for (size_t i = 0; i < entries_.size(); ++i) by_name[entries_[i].info.name] = i;
    std::vector<bool> consumed(entries_.size(), false);
    std::map<size_t, Entry> groups;  // position of .qweight -> grouped entry
    for (const auto& [key, value] : metadata_) {
      if (key.rfind("wquant.", 0) != 0 || key == "wquant.format_version") continue;
      const std::string name = key.substr(7);
      const QuantizedTensor q = parse_quant_record(value, name, path_);
      if (by_name.count(name)) {
        throw Error(path_ + ": " + name + ": both a wquant record (" + key + ") and a tensor of that name");
      }
      Entry g;
      g.info.name = name;
      g.info.shape = q.shape;
      g.info.kind = StoredKind::Quantized;
      g.info.type_name = "wq" + std::to_string(q.spec.bits);
      g.record = value;
      size_t first = 0;
      for (const char* suffix : {".qweight", ".scales", ".zeros"}) {
        auto it = by_name.find(name + suffix);
        if (it == by_name.end()) {
          if (std::string(suffix) == ".zeros" && q.scheme == Scheme::MnnSym) continue;
          throw Error(path_ + ": " + name + ": the record has no " + suffix + " tensor");
        }
        if (g.parts.empty()) first = it->second;
        g.parts.push_back(entries_[it->second]);
        g.info.nbytes += entries_[it->second].info.nbytes;
        consumed[it->second] = true;
      }
      g.shard = g.parts[0].shard;
      g.offset = g.parts[0].offset;
      groups[first] = std::move(g);
    }
    std::vector<Entry> out;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (groups.count(i)) out.push_back(std::move(groups[i]));
      else if (!consumed[i]) out.push_back(std::move(entries_[i]));
    }
    entries_ = std::move(out);
  }

  static Entry parse_entry(const std::string& p, const std::string& name, const json& j, uint64_t data_start,
                           uint64_t file_size) {
    const std::string at = p + ": " + name;
    if (!j.is_object()) throw Error(at + ": entry is not an object");
    if (!j.contains("dtype") || !j["dtype"].is_string()) throw Error(at + ": no dtype");
    if (!j.contains("shape") || !j["shape"].is_array()) throw Error(at + ": no shape");
    if (!j.contains("data_offsets") || !j["data_offsets"].is_array() || j["data_offsets"].size() != 2)
      throw Error(at + ": data_offsets is not a pair");
    Entry e;
    e.info.name = name;
    e.info.type_name = j["dtype"].get<std::string>();
    const SafetensorsDType* dt = find_safetensors_dtype(e.info.type_name);
    if (!dt) throw Error(at + ": unknown dtype " + e.info.type_name);
    for (const json& d : j["shape"]) {
      if (!d.is_number_integer()) throw Error(at + ": shape has a non-integer dimension");
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
        throw Error(at + ": shape has a negative dimension");
      if (d.get<uint64_t>() > uint64_t(INT64_MAX)) throw Error(at + ": shape dimension too large");
      e.info.shape.push_back(d.get<int64_t>());
    }
    const json& o = j["data_offsets"];
    if (!o[0].is_number_unsigned() || !o[1].is_number_unsigned())
      throw Error(at + ": data_offsets are not non-negative integers");
    const uint64_t b = o[0].get<uint64_t>(), end = o[1].get<uint64_t>();
    if (b > end) throw Error(at + ": data_offsets begin " + std::to_string(b) + " is after end " + std::to_string(end));
    const size_t numel = checked_numel(at, e.info.shape);
    if (numel > (UINT64_MAX / dt->size)) throw Error(at + ": shape overflows");
    const uint64_t expect = uint64_t(numel) * dt->size;
    if (end - b != expect) {
      throw Error(at + ": " + std::to_string(end - b) + " bytes of data for shape of " + std::to_string(numel) + " " +
                  e.info.type_name + " elements (" + std::to_string(expect) + " bytes)");
    }
    if (end > file_size || data_start > file_size - end) {
      throw Error(at + ": data [" + std::to_string(b) + ", " + std::to_string(end) + ") runs past the end of the file (" +
                  std::to_string(file_size) + " bytes, data starts at " + std::to_string(data_start) +
                  "): truncated");
    }
    e.offset = data_start + b;
    e.info.nbytes = end - b;
    e.info.kind = dt->is_float ? StoredKind::Float : StoredKind::Other;
    e.info.dtype = dt->dtype;
    return e;
  }

  std::string path_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
  std::mutex aligned_mutex_;
  std::map<size_t, std::vector<float>> aligned_;  // copies of misaligned float tensors, until released
};

std::vector<std::string> shards_of_index(const std::string& index_path, WeightMap& wm) {
  MappedFile f(index_path);
  const uint8_t* d = f.size() ? f.data() : reinterpret_cast<const uint8_t*>("");
  const json j = parse_strict(d, d + f.size(), index_path, "the index");
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index_path + ": no weight_map object: not a safetensors index");
  std::set<std::string> files;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string()) throw Error(index_path + ": weight_map." + it.key() + " is not a file name");
    const std::string file = it->get<std::string>();
    if (file.find('/') != std::string::npos || file == ".." || file.empty())
      throw Error(index_path + ": shard name '" + file + "' is not a plain file name");
    files.insert(file);
    wm[it.key()] = file;
  }
  if (files.empty()) throw Error(index_path + ": weight_map is empty");
  // Shards named PREFIX-00001-of-00003.safetensors: the index must name all three, or a
  // whole shard's tensors would be left out without a word.
  static const std::regex numbered(R"((.*)-([0-9]+)-of-([0-9]+)\.safetensors)");
  for (const std::string& file : files) {
    std::smatch m;
    if (!std::regex_match(file, m, numbered) || m[3].length() > 6) continue;
    const size_t width = size_t(m[2].length()), total = std::stoul(m[3].str());
    for (size_t k = 1; k <= total; ++k) {
      std::string n = std::to_string(k);
      if (n.size() < width) n.insert(0, width - n.size(), '0');
      const std::string shard = m[1].str() + "-" + n + "-of-" + m[3].str() + ".safetensors";
      if (!files.count(shard)) {
        throw Error(index_path + ": shard " + shard + " (" + std::to_string(k) + " of " + std::to_string(total) +
                    ") has no tensor in the weight_map: the index is incomplete");
      }
    }
  }
  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  std::vector<std::string> out;
  for (const std::string& file : files) {
    const std::string p = (dir / file).string();
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) throw Error(index_path + ": shard " + file + " is missing");
    out.push_back(p);
  }
  return out;
}

}  // namespace

bool looks_like_safetensors(const uint8_t* head, size_t n, uint64_t file_size) {
  if (n < 9 || file_size < 10) return false;
  uint64_t hlen;
  std::memcpy(&hlen, head, 8);
  return hlen >= 2 && hlen <= kMaxHeader && hlen <= file_size - 8 && head[8] == '{';
}

std::unique_ptr<ModelReader> open_safetensors(const std::string& path) {
  const bool index = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (!index) return std::make_unique<SafetensorsReader>(path, std::vector<std::string>{path}, nullptr);
  WeightMap wm;
  std::vector<std::string> shards = shards_of_index(path, wm);
  return std::make_unique<SafetensorsReader>(path, std::move(shards), &wm);
}

}  // namespace wq
