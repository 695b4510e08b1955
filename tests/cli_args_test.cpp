// The wquant command line without running anything: flags and their MNNConvert
// spellings, bad values, settings precedence, and both params file forms.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/output_path.h"
#include "cli/mnn_compat.h"
#include "cli/params_file.h"
#include "cli/spec_settings.h"
#include "engine/error.h"

namespace wq::cli {
namespace {

using Args = std::vector<std::string>;
using nlohmann::json;

// The message of the Error that parsing `args` throws; fails if none is thrown or the
// kind is not Usage.
std::string usage_error(const Args& args) {
  try {
    parse_command_line(args);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << ::testing::PrintToString(args);
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CliMnnCompat, AsymmetricFlagReadsEverySpellingAsMnnUsersMeanIt) {
  struct Case {
    Args args;
    bool on;
  } cases[] = {
      {{"quantize", "a", "b", "--weightQuantAsymmetric"}, true},
      {{"quantize", "--weightQuantAsymmetric", "a", "b"}, true},
      {{"quantize", "a", "b", "--weightQuantAsymmetric=1"}, true},
      {{"quantize", "a", "b", "--weightQuantAsymmetric", "1"}, true},
      {{"quantize", "a", "b", "--weightQuantAsymmetric", "true"}, true},
      {{"quantize", "a", "b", "--weightQuantAsymmetric", "TRUE"}, true},
      {{"quantize", "a", "b", "--weightQuantAsymmetric", "0"}, false},
      {{"quantize", "a", "b", "--weightQuantAsymmetric", "false"}, false},
      {{"quantize", "a", "b", "--weightQuantAsymmetric=false"}, false},
      {{"quantize", "a", "b", "--asym"}, true},
      {{"quantize", "a", "b", "--asym", "0"}, false},
  };
  for (const Case& c : cases) {
    const MnnNormalised n = normalise_mnn_args(c.args);
    ASSERT_TRUE(n.asym.has_value()) << ::testing::PrintToString(c.args);
    EXPECT_EQ(*n.asym, c.on) << ::testing::PrintToString(c.args);
    EXPECT_EQ(n.args, (Args{"quantize", "a", "b"})) << ::testing::PrintToString(c.args);
  }
}

TEST(CliMnnCompat, LastAsymmetricFlagWinsAndPathsAreNotEaten) {
  const MnnNormalised n = normalise_mnn_args({"quantize", "--asym", "1", "--weightQuantAsymmetric", "0", "x.gguf"});
  EXPECT_EQ(n.asym, std::optional<bool>(false));
  EXPECT_EQ(n.args, (Args{"quantize", "x.gguf"}));
  EXPECT_THROW(normalise_mnn_args({"quantize", "--weightQuantAsymmetric=maybe"}), Error);
  // After "--" every argument is a path, even one spelled like a flag.
  const MnnNormalised d = normalise_mnn_args({"quantize", "--", "--asym"});
  EXPECT_FALSE(d.asym.has_value());
  EXPECT_EQ(d.args, (Args{"quantize", "--", "--asym"}));
}

TEST(CliMnnCompat, MnnFormWithoutCommandMeansQuantize) {
  const MnnNormalised n = normalise_mnn_args({"--modelFile", "a", "--MNNModel", "b"});
  EXPECT_TRUE(n.implied_quantize);
  EXPECT_EQ(n.args.front(), "quantize");
  EXPECT_FALSE(normalise_mnn_args({"--help"}).implied_quantize);
  EXPECT_FALSE(normalise_mnn_args({"inspect", "x"}).implied_quantize);
}

TEST(CliMnnCompat, FrameworkValuesAreMnnConvertsList) {
  EXPECT_EQ(canonical_framework("onnx"), "ONNX");
  EXPECT_EQ(canonical_framework("TFLITE"), "TFLITE");
  EXPECT_EQ(canonical_framework("Torch"), "TORCH");
  EXPECT_EQ(canonical_framework("pytorch"), "");
  EXPECT_EQ(canonical_framework(""), "");
}

TEST(CliArgs, QuantizeFlagsLandInTheSettings) {
  const CommandLine cl = parse_command_line({"quantize", "in.safetensors", "out.wq", "--bits", "3", "--block", "32",
                                             "--hqq", "--hqq-steps", "7", "--fp16", "--threads", "2", "--isa",
                                             "scalar", "--json", "--force"});
  ASSERT_EQ(cl.kind, CommandKind::Quantize);
  const QuantizeArgs& q = cl.quantize;
  EXPECT_EQ(q.input, "in.safetensors");
  EXPECT_EQ(q.output, "out.wq");
  EXPECT_EQ(q.said.bits, 3);
  EXPECT_EQ(q.said.block, 32);
  EXPECT_EQ(q.said.hqq, true);
  EXPECT_FALSE(q.said.asym.has_value());
  EXPECT_EQ(q.said.hqq_steps, 7);
  EXPECT_EQ(parse_command_line({"quantize", "a", "b", "--hqq", "--hqq-stop", "tensor"}).quantize.said.hqq_stop,
            HqqStop::Tensor);
  EXPECT_EQ(q.said.fp16, true);
  EXPECT_EQ(q.run.threads, 2);
  EXPECT_EQ(q.run.isa, Isa::Scalar);
  EXPECT_TRUE(cl.verbosity.json);
  EXPECT_TRUE(q.force);
  EXPECT_FALSE(q.dry_run);
}

TEST(CliArgs, MnnSpellingsGiveTheSameSettingsAsOurs) {
  const CommandLine ours = parse_command_line({"quantize", "m.safetensors", "o.wq", "--bits", "4", "--block", "32", "--hqq"});
  for (const Args& mnn : {Args{"--modelFile", "m.safetensors", "--MNNModel", "o.wq", "--weightQuantBits", "4",
                               "--weightQuantBlock", "32", "--hqq"},
                          Args{"-f", "ONNX", "--modelFile", "m.safetensors", "--MNNModel", "o.wq", "--weightQuantBits=4",
                               "--weightQuantBlock=32", "--hqq", "--weightQuantAsymmetric", "true"},
                          Args{"quantize", "--modelFile", "m.safetensors", "--MNNModel", "o.wq", "--weightQuantBits", "4",
                               "--weightQuantBlock", "32", "--weightQuantAsymmetric=1", "--hqq"}}) {
    const CommandLine cl = parse_command_line(mnn);
    ASSERT_EQ(cl.kind, CommandKind::Quantize) << ::testing::PrintToString(mnn);
    EXPECT_EQ(cl.quantize.input, ours.quantize.input);
    EXPECT_EQ(cl.quantize.output, ours.quantize.output);
    const EffectiveSpec a = resolve_settings(cl.quantize.said, "");
    const EffectiveSpec b = resolve_settings(ours.quantize.said, "");
    EXPECT_EQ(a.spec.bits, b.spec.bits);
    EXPECT_EQ(a.spec.block, b.spec.block);
    EXPECT_EQ(a.spec.asym, b.spec.asym);
    EXPECT_EQ(a.spec.hqq, b.spec.hqq);
    EXPECT_TRUE(a.spec.hqq && a.spec.asym);
  }
}

TEST(CliArgs, MnnSpellingsTurnOnMnnRulesAndOursDoNot) {
  const CommandLine ours = parse_command_line({"quantize", "a", "b.wq", "--block", "32", "--bits", "4", "--asym"});
  EXPECT_FALSE(ours.quantize.said.mnn_block);
  EXPECT_FALSE(ours.quantize.said.mnn_form);
  const EffectiveSpec e = resolve_settings(ours.quantize.said, "");
  EXPECT_FALSE(e.spec.mnn_blocks || e.spec.mnn_flush || e.spec.fp16_truncate);
  for (const Args& a : {Args{"quantize", "a", "b.wq", "--weightQuantBlock", "32"},
                        Args{"--modelFile", "a", "--MNNModel", "b.wq", "--weightQuantBlock=32"}}) {
    const CommandLine cl = parse_command_line(a);
    EXPECT_TRUE(cl.quantize.said.mnn_block);
    EXPECT_TRUE(cl.quantize.said.mnn_form);
    const EffectiveSpec m = resolve_settings(cl.quantize.said, "");
    EXPECT_TRUE(m.spec.mnn_blocks && m.spec.mnn_flush);
    EXPECT_EQ(m.spec.block, 32);
  }
  // Any MNN-only spelling is MNNConvert's form, even with wquant's --block.
  EXPECT_TRUE(parse_command_line({"quantize", "a", "b", "--weightQuantBits", "4"}).quantize.said.mnn_form);
  EXPECT_FALSE(parse_command_line({"quantize", "a", "b", "--weightQuantBits", "4", "--block", "32"}).quantize.said.mnn_block);
  const EffectiveSpec s16 =
      resolve_settings(parse_command_line({"quantize", "a", "b", "--weightQuantScaleBit", "16"}).quantize.said, "");
  EXPECT_TRUE(s16.spec.fp16 && s16.spec.fp16_truncate);
  EXPECT_FALSE(s16.kept_f16);
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--weightQuantScaleBit", "8"}), "scale bits"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--block", "32", "--weightQuantBlock", "32"}), "twice"));
}

TEST(CliArgs, FrameworkFlagIsCheckedAndReportedAsInformative) {
  const CommandLine cl = parse_command_line({"-f", "onnx", "--modelFile", "a", "--MNNModel", "b.wq"});
  EXPECT_EQ(cl.quantize.framework, "ONNX");
  bool said = false;
  for (const std::string& n : cl.notes) said = said || contains(n, "informative");
  EXPECT_TRUE(said);
  EXPECT_TRUE(contains(usage_error({"-f", "PYTORCH", "--modelFile", "a", "--MNNModel", "b.wq"}), "-f"));
}

// The error figures are measured only where something shows them: the summary, the JSON
// document (with or without --quiet); --quiet alone shows neither.
TEST(CliArgs, QuietWithoutJsonMeasuresNoError) {
  auto skips = [](Args extra) {
    Args a = {"quantize", "a", "b.wq"};
    a.insert(a.end(), extra.begin(), extra.end());
    return parse_command_line(a).quantize.no_metrics;
  };
  EXPECT_FALSE(skips({}));
  EXPECT_FALSE(skips({"--verbose"}));
  EXPECT_FALSE(skips({"--json"}));
  EXPECT_FALSE(skips({"--quiet", "--json"}));
  EXPECT_TRUE(skips({"--quiet"}));
  EXPECT_TRUE(skips({"-q"}));
  EXPECT_TRUE(skips({"--no-metrics"}));
  EXPECT_TRUE(parse_command_line({"--modelFile", "a", "--MNNModel", "b.wq", "--quiet"}).quantize.no_metrics);
}

TEST(CliArgs, ChannelWiseSpellings) {
  EXPECT_FALSE(parse_command_line({"quantize", "a", "b"}).quantize.said.block.has_value());
  const CommandLine cl = parse_command_line({"quantize", "a", "b", "--weightQuantBlock", "-1"});
  EXPECT_EQ(cl.quantize.said.block, -1);
  EXPECT_EQ(resolve_settings(cl.quantize.said, "").spec.block, 0);
}

TEST(CliArgs, BadValuesAreUsageErrorsNamingTheFlag) {
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--bits", "9"}), "bits must be between 2 and 8"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--weightQuantBits", "1"}), "bits must be between 2 and 8"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--bits", "four"}), "--bits"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--block", "0"}), "block must be"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--block", "-3"}), "block must be"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--frobnicate"}), "--frobnicate"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--isa", "sse9"}), "--isa"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--threads", "-2"}), "--threads"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--type", "Q3_K_X"}), "--type"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--output-tensor-type", "Q4_K_M"}), "--output-tensor-type"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--token-embedding-type", "IQ2_XXS"}), "--token-embedding-type"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "Q4_K_X"}), "TYPE"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--tensor-type", "attn_v"}), "PATTERN=TYPE"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--tensor-type", "=q8_0"}), "PATTERN=TYPE"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--tensor-type", "attn_v=q9_9"}), "--tensor-type"));
  // A pattern that is no regular expression: refused with the command line, before any file is read.
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--tensor-type", "(=q8_0"}), "--tensor-type (=q8_0: not a regular expression"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "Q4_K_M", "4abc"}), "THREADS"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "Q4_K_M", "two"}), "THREADS"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "Q4_K_M", "2", "--threads", "2"}), "threads are given twice"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "Q4_K_M", "--type", "Q8_0"}), "type is given twice"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--format", "tflite"}), "--format"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--hqq-p", "1.5", "--hqq"}), "p must be"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--hqq-steps", "-5"}), "steps"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--hqq", "--weightQuantAsymmetric", "0"}), "asymmetric"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a"}), "expected IN and OUT"));
  EXPECT_TRUE(contains(usage_error({"quantize", "a", "b", "--modelFile", "c"}), "twice"));
  EXPECT_TRUE(contains(usage_error({"frobnicate"}), "unknown command"));
  EXPECT_TRUE(contains(usage_error({}), "no command"));
  EXPECT_TRUE(contains(usage_error({"inspect"}), "FILE"));
  EXPECT_TRUE(contains(usage_error({"verify", "a"}), "FLOAT QUANT"));
  EXPECT_TRUE(contains(usage_error({"dequantize", "a", "b", "--fp16", "--bf16"}), "--bf16"));
  EXPECT_TRUE(contains(usage_error({"bench", "--size", "12X"}), "--size"));
  EXPECT_TRUE(contains(usage_error({"bench", "--size", "0"}), "--size"));
  EXPECT_TRUE(contains(usage_error({"inspect", "x", "-q", "-v"}), "--verbose"));
}

TEST(CliArgs, HelpAndVersion) {
  for (const Args& a : {Args{"help"}, Args{"--help"}, Args{"-h"}}) {
    const CommandLine cl = parse_command_line(a);
    EXPECT_EQ(cl.kind, CommandKind::Help);
    EXPECT_TRUE(contains(cl.help_text, "Exit codes")) << cl.help_text;
  }
  for (const Args& a : {Args{"help", "quantize"}, Args{"quantize", "--help"}, Args{"--modelFile", "x", "--help"}}) {
    const std::string h = parse_command_line(a).help_text;
    EXPECT_TRUE(contains(h, "--weightQuantAsymmetric")) << h;
    EXPECT_TRUE(contains(h, "SYMMETRIC")) << h;
    EXPECT_TRUE(contains(h, "130")) << h;
    EXPECT_TRUE(contains(h, "\"algo\"")) << h;
  }
  EXPECT_TRUE(contains(parse_command_line({"help", "bench"}).help_text, "--size"));
  EXPECT_TRUE(contains(usage_error({"help", "nope"}), "unknown command"));
  EXPECT_EQ(parse_command_line({"--version"}).kind, CommandKind::Version);
  EXPECT_TRUE(contains(version_text(), "wquant "));
}

TEST(CliArgs, OtherCommands) {
  CommandLine cl = parse_command_line({"verify", "f.safetensors", "q.wq", "--top", "5", "--json"});
  EXPECT_EQ(cl.kind, CommandKind::Verify);
  EXPECT_EQ(cl.verify.float_file, "f.safetensors");
  EXPECT_EQ(cl.verify.quant_file, "q.wq");
  EXPECT_EQ(cl.verify.top, 5u);
  cl = parse_command_line({"dequantize", "q.wq", "o.safetensors", "--bf16"});
  EXPECT_EQ(cl.dequantize.dtype, DType::BF16);
  cl = parse_command_line({"bench", "--size", "4M", "--threads", "1"});
  EXPECT_EQ(cl.bench.size, 4u << 20);
  EXPECT_EQ(cl.bench.run.threads, 1);
  cl = parse_command_line({"inspect", "m.wq", "--quiet"});
  EXPECT_EQ(cl.inspect.file, "m.wq");
  EXPECT_TRUE(cl.verbosity.quiet);
}

TEST(CliSettings, CommandLineWinsOverFileDefaultsWhichWinOverBuiltIns) {
  SpecSettings cli, file;
  cli.bits = 3;
  file.bits = 8;
  file.block = 64;
  file.asym = true;
  const EffectiveSpec e = resolve_settings(cli.or_else(file), "");
  EXPECT_EQ(e.spec.bits, 3);
  EXPECT_EQ(e.spec.block, 64);
  EXPECT_TRUE(e.spec.asym);
  EXPECT_FALSE(e.spec.hqq);
  const EffectiveSpec d = resolve_settings(SpecSettings{}, "");
  EXPECT_EQ(d.spec.bits, 4);
  EXPECT_EQ(d.spec.block, 0);
  EXPECT_FALSE(d.spec.asym);
  EXPECT_FALSE(d.keep_float);
  SpecSettings zero;
  zero.bits = 0;
  EXPECT_TRUE(resolve_settings(zero, "").keep_float);
}

TEST(CliSettings, HqqImpliesAsymmetricAndSaysSo) {
  SpecSettings s;
  s.hqq = true;
  EffectiveSpec e = resolve_settings(s, "");
  EXPECT_TRUE(e.spec.asym);
  EXPECT_TRUE(e.asym_implied);
  s.asym = true;
  e = resolve_settings(s, "");
  EXPECT_FALSE(e.asym_implied);
}

TEST(CliSettings, GgufTypeFollowsBitsAndRefusesContradictions) {
  auto type_for = [](SpecSettings s) { return resolve_ggml_type(resolve_settings(s, ""), s, ""); };
  SpecSettings s;
  EXPECT_EQ(type_for(s), GgmlBlock::Q4_0);
  s.bits = 8;
  EXPECT_EQ(type_for(s), GgmlBlock::Q8_0);
  s.bits = 5;
  s.asym = true;
  EXPECT_EQ(type_for(s), GgmlBlock::Q5_1);
  SpecSettings h;
  h.hqq = true;
  EXPECT_EQ(type_for(h), GgmlBlock::Q4_1);
  SpecSettings t;
  t.ggml = GgmlBlock::Q8_0;
  EXPECT_EQ(type_for(t), GgmlBlock::Q8_0);
  t.bits = 4;
  EXPECT_THROW(type_for(t), Error);  // Q8_0 with bits 4
  SpecSettings three;
  three.bits = 3;
  EXPECT_THROW(type_for(three), Error);
  SpecSettings hq0;
  hq0.hqq = true;
  hq0.ggml = GgmlBlock::Q4_0;
  EXPECT_THROW(type_for(hq0), Error);
  SpecSettings b64;
  b64.block = 64;
  EXPECT_THROW(type_for(b64), Error);
  b64.block = 32;
  EXPECT_EQ(type_for(b64), GgmlBlock::Q4_0);
  GgmlBlock parsed;
  EXPECT_TRUE(parse_ggml_type("q5_1", &parsed));
  EXPECT_EQ(parsed, GgmlBlock::Q5_1);
  EXPECT_FALSE(parse_ggml_type("Q8_K", &parsed));
}

TEST(CliParams, WquantFormRulesAndDefaults) {
  const json doc = json::parse(R"({
    "comment": "test",
    "defaults": {"bits": 5, "block": 0, "asym": true, "type": "Q5_1"},
    "rules": [
      {"match": "layers.0.*", "bits": 8, "block": 32},
      {"match": "output*", "skip": true},
      {"match": "norm", "bits": 0},
      {"match": "x", "hqq": true, "type": "q4_1", "comment": "why"}
    ]})");
  const ParamsFile p = parse_params_json(doc, "p.json");
  EXPECT_EQ(p.form, ParamsFile::Form::Wquant);
  EXPECT_EQ(p.defaults.bits, 5);
  EXPECT_EQ(p.defaults.block, -1);
  EXPECT_EQ(p.defaults.asym, true);
  EXPECT_EQ(p.defaults.ggml, GgmlBlock::Q5_1);
  ASSERT_EQ(p.rules.size(), 4u);
  EXPECT_EQ(p.rules[0].pattern, "layers.0.*");
  EXPECT_EQ(p.rules[0].bits, 8);
  EXPECT_EQ(p.rules[0].block, 32);
  EXPECT_FALSE(p.rules[0].skip.has_value());  // 1-D tensors it matches stay float
  EXPECT_EQ(p.rules[1].skip, true);
  EXPECT_FALSE(p.rules[1].bits.has_value());
  EXPECT_EQ(p.rules[2].skip, true);
  EXPECT_FALSE(p.rules[2].bits.has_value());
  EXPECT_EQ(p.rules[3].hqq, true);
  EXPECT_EQ(p.rules[3].ggml, GgmlBlock::Q4_1);
  EXPECT_EQ(p.entries.size(), 4u);
}

TEST(CliParams, WquantFormErrorsNameTheFileAndEntry) {
  auto error_of = [](const char* text) {
    try {
      parse_params_json(json::parse(text), "p.json");
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "bits": 9}]})"), "p.json: rules[0].bits"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "bitz": 4}]})"), "rules[0].bitz: unknown key"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"bits": 4}]})"), "match"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "skip": "yes"}]})"), "rules[0].skip"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "type": "Q9_K"}]})"), "rules[0].type"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "type": "Q4_K_M"}]})"), "rules[0].type"));  // a mix
  EXPECT_TRUE(contains(error_of(R"({"defaults": {"type": "Q4_K_X"}})"), "defaults.type"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "block": -2}]})"), "rules[0].block"));
  EXPECT_TRUE(contains(error_of(R"({"rules": [{"match": "a", "hqq": true, "asym": false}]})"), "asymmetric"));
  EXPECT_TRUE(contains(error_of(R"({"defaults": {"bits": 1}})"), "defaults.bits"));
  EXPECT_TRUE(contains(error_of(R"({"rule": []})"), "rule: unknown key"));
  EXPECT_TRUE(contains(error_of(R"([1, 2])"), "JSON object"));
}

// A setting given twice in one object was read as its last value without a word.
TEST(CliParams, ASettingGivenTwiceIsRefused) {
  const std::string path = ::testing::TempDir() + "wq-params-dup.json";
  for (const auto& [text, key] : {std::pair<const char*, const char*>{R"({"rules": [{"match": "a", "bits": 8, "bits": 2}]})", "bits"},
                                  {R"({"defaults": {"asym": true}, "defaults": {"asym": false}})", "defaults"}}) {
    std::ofstream(path) << text;
    try {
      read_params_file(path);
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
      EXPECT_TRUE(contains(e.what(), path + ": " + key + " appears twice in one object")) << e.what();
    }
  }
  std::ofstream(path) << R"({"rules": [{"match": "a", "bits": 8}, {"match": "b", "bits": 2}]})";
  EXPECT_EQ(read_params_file(path).rules.size(), 2u);  // the same key in two objects is fine
  std::remove(path.c_str());
}

TEST(CliParams, MnnFormLayersApplyToTheOpAndItsWeight) {
  const json doc = json::parse(R"({
    "version": "0.0.0",
    "algo": [
      {"type": "PRUNE", "pruneParams": {}},
      {"type": "QUANTIZE", "quantParams": {"roundMode": "ROUND_AWAY_FROM_ZERO", "layer": [
        {"opName": "layers.0.attention.wq", "weight": [{"name": "w", "bits": 8, "asymmetric": true, "blockSize": 32}],
         "conv": {"inputChannel": 64, "outputChannel": 64, "kernelSize": [1, 1]}},
        {"op_name": "tok_embeddings", "weight": [{"bits": 0}]},
        {"opName": "layers.1.attention.wk", "weight": [{"bits": 4, "block_size": 0}]},
        {"opName": "no_weight_params"},
        {"weight": [{"bits": 4}]}
      ]}}],
    "mnnUuid": "x"})");
  const ParamsFile p = parse_params_json(doc, "mnn.json");
  EXPECT_EQ(p.form, ParamsFile::Form::Mnn);
  ASSERT_EQ(p.rules.size(), 6u);
  EXPECT_EQ(p.entries.size(), 3u);
  EXPECT_EQ(p.rules[0].pattern, "layers.0.attention.wq");
  EXPECT_EQ(p.rules[1].pattern, "layers.0.attention.wq.weight");
  for (int i : {0, 1}) {
    EXPECT_EQ(p.rules[i].bits, 8);
    EXPECT_EQ(p.rules[i].asym, true);
    EXPECT_EQ(p.rules[i].block, 32);
    EXPECT_FALSE(p.rules[i].skip.has_value());
  }
  EXPECT_EQ(p.rules[3].pattern, "tok_embeddings.weight");
  EXPECT_EQ(p.rules[3].skip, true);
  EXPECT_EQ(p.rules[5].block, -1);  // blockSize 0: channel-wise
  EXPECT_FALSE(p.rules[5].asym.has_value());  // left out: the command line's value
}

TEST(CliParams, EscapedNamesMatchOnlyThemselves) {
  for (const std::string name : {"plain.weight", "odd[0].weight", "star*name", "q?", "a]b"}) {
    const std::string pat = escape_glob(name);
    EXPECT_TRUE(glob_match(pat, name)) << name << " -> " << pat;
  }
  EXPECT_FALSE(glob_match(escape_glob("star*name"), "starXname"));
  EXPECT_FALSE(glob_match(escape_glob("q?"), "qx"));
  EXPECT_FALSE(glob_match(escape_glob("odd[0].weight"), "odd0.weight"));
}

// "match" is "an exact tensor name or a glob": a name with glob characters, written as it
// is, matches that tensor (it matched nothing: "[0]" is a class of one character, and
// "W[0]*?" needs a character after the class's match).
TEST(CliParams, ExactNamesMatchThemselvesWhateverTheyHold) {
  for (const std::string name : {"/model/layers.0/mlp/W[0]*?", "odd[0].weight", "a]b", "x[!y]"}) {
    EXPECT_TRUE(glob_match(name, name)) << name;
  }
  // ... and the same string is still a glob for other names.
  EXPECT_TRUE(glob_match("odd[0].weight", "odd0.weight"));
  EXPECT_FALSE(glob_match("odd[0].weight", "odd[1].weight"));
}

TEST(CliParams, UnmatchedEntriesAreReported) {
  const ParamsFile p = parse_params_json(
      json::parse(R"({"rules": [{"match": "layers.*", "bits": 8}, {"match": "nothing.here", "skip": true}]})"), "p.json");
  const std::vector<std::string> u = unmatched_entries(p, {"layers.0.w", "norm"});
  ASSERT_EQ(u.size(), 1u);
  EXPECT_TRUE(contains(u[0], "nothing.here"));
}

TEST(CliParams, ParamsUsedReadBackGiveTheSameSettings) {
  std::vector<TensorInfo> infos(4);
  infos[0] = {"emb", {512, 64}, StoredKind::Float, DType::F32, "F32", 512 * 64 * 4};
  infos[1] = {"w2", {64, 172}, StoredKind::Float, DType::F32, "F32", 64 * 172 * 4};
  infos[2] = {"norm", {64}, StoredKind::Float, DType::F32, "F32", 256};
  infos[3] = {"odd[1]", {32, 64}, StoredKind::Float, DType::F32, "F32", 32 * 64 * 4};
  SpecSettings said;
  said.bits = 4;
  said.block = 32;
  said.hqq = true;
  const EffectiveSpec e = resolve_settings(said, "");
  std::vector<TensorPlan> plan(4);
  for (size_t i = 0; i < 4; ++i) {
    plan[i].source_index = i;
    plan[i].name = infos[i].name;
    plan[i].shape = infos[i].shape;
    plan[i].spec = e.spec;
  }
  plan[0].action = TensorAction::KeepFloat;  // skipped by a rule
  plan[1].action = TensorAction::Quantize;   // block 32 does not divide 172: channel-wise
  plan[1].block = 172;
  plan[2].action = TensorAction::KeepFloat;  // 1-D: kept by the default choice
  plan[3].action = TensorAction::Quantize;
  plan[3].spec.bits = 8;
  plan[3].block = 32;
  const json doc = params_used(e, OutputFormat::Wq, "Q4_0", {}, plan, infos);
  const ParamsFile p = parse_params_json(json::parse(doc.dump()), "used.json");
  EXPECT_EQ(p.defaults.bits, 4);
  EXPECT_EQ(p.defaults.block, 32);
  EXPECT_EQ(p.defaults.hqq, true);
  EXPECT_EQ(p.defaults.hqq_steps, e.spec.hqq_opts.max_steps);
  ASSERT_EQ(p.rules.size(), 3u);
  EXPECT_TRUE(glob_match(p.rules[0].pattern, "emb"));
  EXPECT_EQ(p.rules[0].skip, true);
  EXPECT_TRUE(glob_match(p.rules[1].pattern, "w2"));
  EXPECT_EQ(p.rules[1].block, -1);
  EXPECT_EQ(p.rules[1].bits, 4);
  EXPECT_EQ(p.rules[1].hqq, true);
  EXPECT_TRUE(glob_match(p.rules[2].pattern, "odd[1]"));
  EXPECT_FALSE(glob_match(p.rules[2].pattern, "odd1"));
  EXPECT_EQ(p.rules[2].bits, 8);
  EXPECT_EQ(p.rules[2].block, 32);
}

TEST(CliParams, ParamsUsedKeepTheScaleBitWidthApartFromFp16) {
  // --weightQuantScaleBit 16 (f16 scales rounded toward zero, kept tensors f32) and --fp16
  // (f16 scales rounded to nearest, kept tensors f16) read back as they were.
  for (const bool fp16 : {false, true}) {
    SCOPED_TRACE(fp16);
    SpecSettings said;
    said.scale_bits = 16;
    if (fp16) said.fp16 = true;
    const EffectiveSpec e = resolve_settings(said, "");
    const json doc = params_used(e, OutputFormat::Wq, "Q4_0", {}, {}, {});
    EXPECT_EQ(doc["defaults"]["scale_bits"], 16);
    const ParamsFile p = parse_params_json(json::parse(doc.dump()), "used.json");
    const EffectiveSpec back = resolve_settings(p.defaults, "");
    EXPECT_TRUE(back.spec.fp16 && back.spec.fp16_truncate);
    EXPECT_EQ(back.kept_f16, fp16);
  }
  SpecSettings plain;
  plain.fp16 = true;
  const json doc = params_used(resolve_settings(plain, ""), OutputFormat::Wq, "Q4_0", {}, {}, {});
  EXPECT_FALSE(doc["defaults"].contains("scale_bits"));
  EXPECT_EQ(doc["defaults"]["fp16"], true);
}

}  // namespace
}  // namespace wq::cli

namespace wq::cli {
namespace {

TEST(CliArgs, LlamaQuantizeFormAndOptions) {
  // llama-quantize's order: options, IN OUT TYPE [THREADS]; repeated weight filters add up.
  CommandLine cl = parse_command_line({"quantize", "--imatrix", "im.dat", "--exclude-weights", "ffn_down",
                                       "--exclude-weights", "attn_q", "--pure", "--leave-output-tensor", "in.gguf",
                                       "out.gguf", "q4_k", "3"});
  const QuantizeArgs& a = cl.quantize;
  EXPECT_EQ(a.input, "in.gguf");
  EXPECT_EQ(a.output, "out.gguf");
  EXPECT_EQ(a.said.mix, "Q4_K_M");  // llama-quantize's alias
  EXPECT_FALSE(a.said.ggml.has_value());
  EXPECT_EQ(a.run.threads, 3);
  EXPECT_EQ(a.gguf.imatrix, "im.dat");
  EXPECT_EQ(a.gguf.exclude_weights, (std::vector<std::string>{"ffn_down", "attn_q"}));
  EXPECT_TRUE(a.gguf.pure);
  EXPECT_TRUE(a.gguf.leave_output);
  // A THREADS of 0 or below is every core there (its nthread <= 0), as --threads 0 is here.
  for (const char* every : {"0", "-1", "-8"}) {
    const int threads = parse_command_line({"quantize", "in.gguf", "out.gguf", "Q4_0", every}).quantize.run.threads;
    EXPECT_EQ(threads, 0) << every;
  }
  cl = parse_command_line({"quantize", "in.gguf", "out.gguf", "--type", "Q5_1", "--output-tensor-type", "q6_k",
                           "--token-embedding-type", "F16"});
  EXPECT_EQ(cl.quantize.said.mix, "Q5_1");
  EXPECT_EQ(cl.quantize.said.ggml, GgmlBlock::Q5_1);  // a legacy type: checked against --bits as before
  EXPECT_EQ(cl.quantize.gguf.output_type, GgmlType::Q6_K);
  EXPECT_EQ(cl.quantize.gguf.token_embd_type, GgmlType::F16);
  cl = parse_command_line({"quantize", "--tensor-type", "ATTN_V=q8_0", "--tensor-type", "ffn_down=Q6_K", "in.gguf",
                           "out.gguf", "Q4_K_M"});
  using TT = std::vector<std::pair<std::string, GgmlType>>;
  EXPECT_EQ(cl.quantize.gguf.tensor_types, (TT{{"attn_v", GgmlType::Q8_0}, {"ffn_down", GgmlType::Q6_K}}));
}

// llama-quantize's form without OUT, IN TYPE [THREADS]: TYPE is tried first (a second
// positional that names a type is the type), and OUT is [IN's folder]/ggml-model-NAME.gguf
// with NAME as llama-quantize's QUANT_OPTIONS spells it (c392e5094, examples/quantize):
// the alias typed, or for a number the first entry with that ftype (15 is "Q4_K").
TEST(CliArgs, LlamaQuantizeFormWithoutOut) {
  CommandLine cl = parse_command_line({"quantize", "models/7b/f32.gguf", "q4_k_m", "2"});
  EXPECT_EQ(cl.quantize.input, "models/7b/f32.gguf");
  EXPECT_EQ(cl.quantize.output, "models/7b/ggml-model-Q4_K_M.gguf");
  EXPECT_EQ(cl.quantize.said.mix, "Q4_K_M");
  EXPECT_EQ(cl.quantize.run.threads, 2);
  cl = parse_command_line({"quantize", "--imatrix", "im.dat", "f32.gguf", "Q8_0"});
  EXPECT_EQ(cl.quantize.output, "ggml-model-Q8_0.gguf");
  EXPECT_EQ(cl.quantize.said.mix, "Q8_0");
  EXPECT_EQ(cl.quantize.gguf.imatrix, "im.dat");
  for (const auto& [typed, file, mix] : std::vector<std::array<const char*, 3>>{
           {"15", "ggml-model-Q4_K.gguf", "Q4_K_M"},   // Q4_K comes before Q4_K_M there
           {"q4_k", "ggml-model-Q4_K.gguf", "Q4_K_M"},
           {"Q5_K", "ggml-model-Q5_K.gguf", "Q5_K_M"},
           {"2", "ggml-model-Q4_0.gguf", "Q4_0"},
           {"iq4_xs", "ggml-model-IQ4_XS.gguf", "IQ4_XS"}}) {
    SCOPED_TRACE(typed);
    cl = parse_command_line({"quantize", "/m/f32.gguf", typed});
    EXPECT_EQ(cl.quantize.output, std::string("/m/") + file);
    EXPECT_EQ(cl.quantize.said.mix, mix);
  }
  // A second positional that names no type is OUT, as before.
  cl = parse_command_line({"quantize", "in.gguf", "out.gguf", "Q4_0"});
  EXPECT_EQ(cl.quantize.output, "out.gguf");
  EXPECT_TRUE(contains(usage_error({"quantize", "in.gguf", "Q4_0", "two"}), "THREADS"));
  EXPECT_TRUE(contains(usage_error({"quantize", "in.gguf", "Q4_0", "--type", "Q8_0"}), "type is given twice"));
}

}  // namespace
// An OUT that --force would replace in a sticky directory (/tmp): only root and the
// owners of the file or the directory may rename over it; checked before any work.
TEST(OutputPath, StickyDirectoriesLetOnlyOwnersReplace) {
  const mode_t sticky = S_IFDIR | 01777, plain = S_IFDIR | 0777;
  EXPECT_TRUE(sticky_replace_allowed(plain, 0, 1000, 2000));
  EXPECT_FALSE(sticky_replace_allowed(sticky, 0, 1000, 2000));
  EXPECT_TRUE(sticky_replace_allowed(sticky, 0, 2000, 2000));   // the file's owner
  EXPECT_TRUE(sticky_replace_allowed(sticky, 2000, 1000, 2000));  // the directory's owner
  EXPECT_TRUE(sticky_replace_allowed(sticky, 0, 1000, 0));      // root
}

}  // namespace wq::cli
