// wquant: the command-line program. Parses, runs one command, maps failures to the exit
// codes listed in `wquant help` (cli/exit_codes.h).
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/console.h"
#include "cli/exit_codes.h"
#include "cli/run_support.h"
#include "engine/error.h"
#ifdef WQUANT_HAVE_ONNX
#include "io/onnx_support.h"
#endif

namespace {

int run(const wq::cli::CommandLine& cl) {
  using namespace wq::cli;
  switch (cl.kind) {
    case CommandKind::Help:
      std::fputs(cl.help_text.c_str(), stdout);
      if (!cl.help_text.empty() && cl.help_text.back() != '\n') std::fputc('\n', stdout);
      return kExitOk;
    case CommandKind::Version:
      std::printf("%s\n", version_text().c_str());
      return kExitOk;
    default:
      break;
  }
  Console console(cl.verbosity);
  for (const std::string& n : cl.notes) console.detail(n);
  switch (cl.kind) {
    case CommandKind::Quantize: return run_quantize(cl.quantize, console);
    case CommandKind::Inspect: return run_inspect(cl.inspect, console);
    case CommandKind::Verify: return run_verify(cl.verify, console);
    case CommandKind::Dequantize: return run_dequantize(cl.dequantize, console);
    case CommandKind::Bench: return run_bench(cl.bench, console);
    default: return kExitInternal;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace wq::cli;
  // Tensor buffers are tens of MiB and come and go once per tensor: served by mmap, each
  // one would be fresh zero pages, faulted in again for every tensor. Kept in the heap,
  // they are reused warm (peak memory is unchanged: the pipeline's tokens bound it).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  install_interrupt_handlers();
  // A document for a file or a pipe is written at the end in one piece where it fits, so a
  // write that fails is seen with its cause (errno is gone by the end for one that failed
  // mid-run); a terminal gets its lines as they come.
  // (glibc takes the size only with a buffer given.)
  static char stdout_buffer[size_t(1) << 20];
  if (!::isatty(STDOUT_FILENO)) std::setvbuf(stdout, stdout_buffer, _IOFBF, sizeof stdout_buffer);
#ifdef WQUANT_HAVE_ONNX
  wq::enable_onnx();
#endif
  try {
    const int code = run(parse_command_line(std::vector<std::string>(argv + 1, argv + argc)));
    // What went to stdout (a --json document, a table) is the command's result: a write
    // that failed (a full disk under `> report.json`, a closed pipe) fails the command,
    // which otherwise exited 0 with a truncated document.
    errno = 0;
    if ((std::fflush(stdout) != 0 || std::ferror(stdout)) && code == kExitOk) {
      std::fprintf(stderr, "wquant: error: standard output: cannot be written: %s\n",
                   std::strerror(errno ? errno : EIO));
      return exit_code(wq::ErrorKind::Output);
    }
    return code;
  } catch (const wq::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "wquant: error: %s\n", printable(e.message()).c_str());
    return exit_code(e.kind());
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "wquant: error: out of memory\n");
    return kExitInternal;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "wquant: error: internal: %s\n", printable(e.what()).c_str());
    return kExitInternal;
  }
}
