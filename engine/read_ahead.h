// Read-ahead of the pipeline's input: when the serial reader stage admits a tensor (at
// most `tokens` tensors ahead of the writer, so memory stays bounded), its mapped bytes
// are brought in before a worker reads them, so workers do not stall on first-touch page
// faults. Chosen by WQUANT_READAHEAD, so each strategy can be measured on a machine:
//   pread (default): the quantizers do not read float tensors through the mapping at
//     all: each row tile is pread into a per-thread buffer (RowSource::tile, and
//     engine/tensor.h for the measurements), and the reader stage only asks the kernel to
//     start reading the admitted tensor (MADV_WILLNEED), so a cold file streams in ahead.
//     Tensors copied as they are, ONNX inputs and the whole-tensor passes (HQQ's lockstep
//     solver of --hqq-stop tensor, MNN's flush) still read the mapping;
//   populate: madvise(MADV_POPULATE_READ) maps the tensor's pages in one call
//     (Linux 5.14+; elsewhere `touch`);
//   touch: one read per page, the same effect on any kernel;
//   willneed: madvise(MADV_WILLNEED): starts reading a cold file into the page cache,
//     but leaves the page-table faults to the workers;
//   off: nothing beyond the mapping's MADV_SEQUENTIAL.
// Huge pages: Linux maps a regular file's page cache in 4 KiB pages (ext4, xfs; tmpfs
// only with huge=always), so there is nothing to ask for on the input side.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wq {

enum class ReadAhead { Off, WillNeed, Populate, Touch, Pread };

// From WQUANT_READAHEAD; another value throws Error (ErrorKind::Usage) naming it.
ReadAhead read_ahead_from_env();
const char* read_ahead_name(ReadAhead r);

// A size in bytes from the environment variable `name` (a positive decimal number), or
// `fallback` where it is unset or empty; another value throws Error (ErrorKind::Usage)
// naming the variable. For the pipeline's measuring knobs (WQUANT_ROW_PIECE_BYTES,
// WQUANT_COLUMN_BAND_BYTES).
size_t bytes_from_env(const char* name, size_t fallback);

// Brings [p, p + n) of a read-only mapping in as `how` says. Never fails: read-ahead is
// advice, and a range it could not bring in is faulted in by its first reader.
void read_ahead(const uint8_t* p, size_t n, ReadAhead how);

}  // namespace wq
