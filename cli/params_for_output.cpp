#include "cli/params_for_output.h"

#include "engine/error.h"
#include "engine/gguf_mix.h"

namespace wq::cli {

void refuse_gguf_types_elsewhere(const ParamsFile& p, OutputFormat format) {
  if (format == OutputFormat::Gguf) return;
  const std::string instead = std::string("; this OUT is ") + output_format_name(format) + ": use \"bits\", \"block\" and \"asym\"";
  if (p.defaults.mix) {
    throw Error(p.path + ": defaults: \"type\" " + *p.defaults.mix + " applies to GGUF output only (as --type does)" + instead,
                ErrorKind::Usage);
  }
  for (size_t i = 0; i < p.rules.size(); ++i) {
    if (!p.rules[i].gguf_type) continue;
    throw Error(p.path + ": " + p.entries[p.rule_entry[i]] + ": \"type\" " + ggml_type_name(*p.rules[i].gguf_type) +
                    " applies to GGUF output only" + instead + " (or \"skip\": true to keep it float)",
                ErrorKind::Usage);
  }
}

}  // namespace wq::cli
