#include "cli/help_text.h"

#include "kernels/kernels.h"

namespace wq::cli {

namespace {

const char* const kExitCodes = R"(Exit codes:
  0    success
  1    internal error (a bug in wquant: please report it with the command line)
  2    usage: unknown flag or command, missing argument, bad value (--bits 9, --block 0),
       contradictory flags, a malformed params file
  3    bad input: a missing, unreadable, truncated or unsupported input file, an input
       that changes while it is read, a model wquant already quantized (dequantize first)
  4    output: the directory is missing or not writable, the disk is full, OUT exists
       (without --force) or appeared during the run, OUT is not a regular file, OUT is
       the input itself (refused even with --force), the params file cannot be written
  130  interrupted by Ctrl-C or SIGTERM; the temporary output is removed, so no partial
       file is ever left under OUT's name (a signal once OUT is in place is too late
       to undo it: the run ends there, exit 0)
  128+N  killed by another catchable signal N (SIGHUP, SIGQUIT, SIGPIPE, ...), after
       removing the temporary output
Every error is one line on stderr: "wquant: error: <file>: <tensor>: <problem>".)";

}  // namespace

// The ISA names of kernels/isa_list.inc as "scalar|avx2|avx512|neon".
std::string isa_choices() {
  std::string s;
  for (int i = 0; i < kIsaCount; ++i) s += (i ? "|" : "") + std::string(isa_name(Isa(i)));
  return s;
}

std::string top_level_footer() {
  return std::string(R"(
Commands:
  wquant quantize IN OUT [flags]           quantize a model (see 'wquant help quantize')
  wquant --modelFile IN --MNNModel OUT ... the same, with MNNConvert's spellings
  wquant inspect FILE [--json]
  wquant verify FLOAT QUANT [--json]
  wquant dequantize QUANT OUT.safetensors [--fp16|--bf16]
  wquant bench [--size N] [--threads N]
  wquant help [COMMAND]    wquant --version

Flags come after the command. Environment: WQUANT_ISA=)") + isa_choices() +
         R"( forces the
kernels as --isa does; the program says which ISA ran.

)" + kExitCodes;
}

std::string quantize_footer() {
  return std::string(R"(
Defaults: 4 bits, channel-wise, SYMMETRIC (as MNNConvert documented it; newer MNN
releases default to asymmetric: pass --asym or --weightQuantAsymmetric 1 for that),
scales in f32, every usable CPU, the best ISA. Quantized: float tensors of 2 or more
dimensions (linear, embedding, conv weights); 1-D tensors (norms, biases) stay float.
Output bytes never depend on --threads or --isa.

OUT: must not exist unless --force is given; OUT may never be the input (same file by
any path). The output is written to a temporary file beside OUT and renamed when
complete, so OUT is either the whole result or untouched.

MNNConvert spellings (accepted as they are; `wquant --modelFile ...` needs no command):
  --modelFile IN             = IN
  --MNNModel OUT             = OUT
  --weightQuantBits N        = --bits N; 0 keeps every tensor float (MNNConvert's default
                               is 0; wquant's is 4)
  --weightQuantAsymmetric V  = --asym. A bare flag, =1, ' 1' and ' true' all mean on;
                               0 / false mean off. (MNNConvert reads ' 1' and ' true' as
                               false, and then turns --hqq off with a warning.)
  --weightQuantBlock N       MNNConvert's block: N input channels times the whole kernel
                               (N*kh*kw weights for a conv), only for N >= 16, a multiple
                               of 16 dividing the input channels, else channel-wise;
                               -1 = channel-wise. (--block N: N weights along the row)
  --weightQuantScaleBit B    32: f32 scales (default); 16: f16 scales and zeros rounded
                               toward zero, as MNNConvert stores them
  --hqq                      HQQ; implies asymmetric (said once on stderr). --hqq with
                               --weightQuantAsymmetric 0 is refused as contradictory
  --fp16                     scales, zeros and kept-float tensors in f16
  --compressionParamsFile F  = --params F (both JSON forms below)
  -f FW                      checked against MNNConvert's list, then ignored (with
                             --verbose it says so): the input format is read from the file
  --bizCode CODE             accepted and ignored
With any of MNNConvert's own spellings, weights with |w| < FLT_MIN are read as 0 before
quantizing, as MNNConvert does.
A block must divide a tensor's row (input channels x kernel size for a conv); where it
does not, that tensor is quantized channel-wise and one line says so.

GGUF output (.gguf, needs a GGUF input, whose keys are copied): --type names a
llama-quantize mix (Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K, IQ4_NL, IQ4_XS, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16, F32, COPY; default from --bits: 4 -> Q4_0, 5 -> Q5_0, 8 -> Q8_0,
with --asym/--hqq Q4_1 / Q5_1; with a mix, --hqq refines the sub-block minima of its
Q2_K / Q4_K / Q5_K tensors), and each tensor gets the type llama-quantize picks for
it, in llama-quantize's tensor order and key order: the same file. llama-quantize's form
works too: wquant quantize [options] IN OUT TYPE [THREADS] (or IN TYPE [THREADS], which
writes ggml-model-TYPE.gguf in IN's folder, as llama-quantize names it), with --pure,
--leave-output-tensor, --output-tensor-type T, --token-embedding-type T, --tensor-type
PATTERN=T, --imatrix FILE (llama-imatrix's .dat or GGUF; --include-weights /
--exclude-weights NAME pick its entries), --allow-requantize, --keep-split (a split IN,
PREFIX-00001-of-0000N.gguf, gives OUT-00001-of-0000N.gguf ... with OUT's .gguf dropped, one
file an input shard, with llama.cpp's split.* keys; an IN that is not split gives
OUT-00001-of-00001.gguf). Where llama-quantize aborts (a row no block of a legacy type
fits) the tensor stays float, with a note.

ONNX output (.onnx, needs an ONNX input, whose graph is rewritten): MatMul weights become
com.microsoft MatMulNBits (2 and 4 bits, 8 bits symmetric; power-of-two blocks >= 16),
symmetric 4/8-bit embeddings read only by Gather GatherBlockQuantized; every other
quantized weight (other bits and blocks, Gemm, Conv) is stored as codes with standard ops
that compute exactly wquant's dequantized weight. --external-data puts tensor data in
OUT.data beside OUT (always when the model passes 2 GB).

Params file (--params / --compressionParamsFile FILE), wquant's form:
  {"defaults": {"bits": 4, "block": 32, "asym": false, "hqq": false, "fp16": false,
                "hqq_steps": 20, "hqq_p": 0.7, "hqq_beta": 10,
                "hqq_kappa": 1.01, "hqq_round_zero": false, "hqq_stop": "block"},
   "rules": [{"match": "layers.0.*", "bits": 8},
             {"match": "layers.*.feed_forward.*", "bits": 8, "block": 32, "asym": true},
             {"match": "tok_embeddings.weight", "skip": true}]}
  GGUF output: {"defaults": {"type": "Q4_K_M"}, "rules": [{"match": "blk.*.attn_v.weight",
  "type": "Q6_K"}]}. "type" applies to GGUF output only; there a rule's "bits", "block"
  and "asym" choose the type as --bits, --block and --asym do (the tensor's type gives
  what they leave out, and stays where they agree with it), and must agree with a
  "type" beside them.
  "match" is an exact tensor name or a glob (* any run, ? one character, [abc] [a-z]
  [!a] a class). Later rules override earlier ones, field by field. "bits": 0 means
  "skip": true; a rule setting any field quantizes the 2-D float tensors it matches
  (1-D ones only with "skip": false); "block": -1 (or 0) is channel-wise. Precedence: a
  rule > a flag on the command line > the file's "defaults" > the built-in default.
  Unknown keys are errors.
MNN's form (protobuf JSON of MNNConvert's compression pipeline) is read as well:
  {"algo": [{"type": "QUANTIZE", "quantParams": {"layer": [
     {"opName": "layers.0.attention.wq", "weight": [{"bits": 8, "asymmetric": true, "blockSize": 32}]}]}}]}
  A layer applies to the tensor whose name is its opName, or its opName + ".weight".
  "bits": 0 keeps the tensor float; fields left out keep the command line's values.
If FILE does not exist, wquant writes the parameters it used there after a successful run
(wquant's form: the defaults and one rule per tensor), says so, and a rerun with the file
gives identical output bytes (given --allow-requantize, --keep-split and
--external-data again, which it does not record): edit it and rerun. A GGUF run's importance matrix is in its
"defaults" ("imatrix": the path as given, read again from the current directory where it is
relative; "imatrix_sha256": a rerun refuses the file if it has changed; "include_weights",
"exclude_weights"); --imatrix on the command line replaces it. --dry-run writes nothing.

)") + kExitCodes;
}

std::string verify_footer() {
  return std::string(R"(
Tensors are matched by name only (a GGUF model and a safetensors model name tensors
differently: compare like with like); unmatched names are listed. Each side is
dequantized tensor by tensor, as a loader would. rel RMSE = sqrt(sum (w - w_hat)^2 /
sum w^2); SNR dB = 10 log10(sum w^2 / sum (w - w_hat)^2); max = max |w - w_hat|. The
summary pools all compared tensors.

)") + kExitCodes;
}

std::string bench_footer() {
  return std::string(R"(
For each ISA this CPU runs: RTN quantize_rows (4-bit, block 64, symmetric) and HQQ
(4-bit, block 64) in weights per second on --threads threads, and each as a fraction of
the streaming read bandwidth (a plain read loop over the f32 buffer, 4 bytes a weight):
how close quantization runs to the speed of reading its input. Best of several timed
repetitions; run it on an otherwise idle machine.

With --model FILE: every scheme (bits 2-8 x blocks 32, 64, 128 and channel-wise x
symmetric, asymmetric and HQQ; the GGUF block types, and HQQ on Q4_1 / Q5_1 and on the
minima of Q2_K / Q4_K / Q5_K) applied to
the model's weight matrices (what quantize quantizes by default): bits per weight (codes,
scales and zeros), relative RMSE and SNR over all of them, the worst tensor, the time,
and '*' on the Pareto front (no scheme both smaller and closer). --json or --csv for
scripts; bench/pareto_plot.py draws the front from the JSON.

)") + kExitCodes;
}

}  // namespace wq::cli
