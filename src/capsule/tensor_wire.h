// The tensor list that carries inputs into the core and answers out of it (boundary calls kInfer,
// the software TEE's socket, the loopback HTTP endpoint's binary bodies):
//
//   tensor_list := count:u32 (<= 64) tensor{count}
//   tensor      := dtype:u8 (1 float32 | 7 int64) rank:u8 (<= 8) pad:u8[6] dim:i64{rank}
//                  byte_count:u64 pad:u8{0..63} data:u8[byte_count]
//
// `pad` before the data brings its offset (from the start of the list) to a multiple of 64, so a
// list read into 64-byte aligned memory yields aligned tensors. byte_count must equal the element
// count (checked for overflow, <= 2^31 elements) times the element size.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/tensor.h"

namespace mlcapsule::capsule {

inline constexpr uint32_t kMaxWireTensors = 64;

// Appends the encoded list to `out` (its size before the call must be a multiple of 64 for the
// data alignment to hold).
void AppendTensorList(std::span<const engine::TensorView> tensors, std::string* out);
size_t TensorListBytes(std::span<const engine::TensorView> tensors);
// The same list as pieces to send with one gathered write, without copying the tensors' data:
// `headers` receives every non-data byte, `pieces` alternates slices of it with the tensors'
// own bytes. Both stay valid while `headers` and the tensors are unchanged.
void TensorListPieces(std::span<const engine::TensorView> tensors, std::string* headers,
                      std::vector<std::span<const uint8_t>>* pieces);
// Views into `bytes` (no copy); they are valid as long as `bytes` is.
Result<std::vector<engine::TensorView>> ParseTensorList(std::span<const uint8_t> bytes);
// Owned copies.
Result<std::vector<engine::Tensor>> ParseTensorListCopy(std::span<const uint8_t> bytes);

}  // namespace mlcapsule::capsule
