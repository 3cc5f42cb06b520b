// In-memory plan helpers (see plan.h). The byte format lives in plan_format.cc.
#include "engine/plan.h"

#include "base/sensitive_memory.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace mlcapsule::engine {

const char* OpTypeName(OpType type) {
  switch (type) {
#define MLC_OP_NAME(name, code) \
  case OpType::k##name:         \
    return #name;
    MLC_ENGINE_OPS(MLC_OP_NAME)
#undef MLC_OP_NAME
  }
  return "?";
}

bool OpTypeFromName(std::string_view name, OpType* type) {
#define MLC_OP_FROM_NAME(op_name, code) \
  if (name == #op_name) {               \
    *type = OpType::k##op_name;         \
    return true;                        \
  }
  MLC_ENGINE_OPS(MLC_OP_FROM_NAME)
#undef MLC_OP_FROM_NAME
  return false;
}

bool IsKnownOpCode(uint16_t code) {
  switch (code) {
#define MLC_OP_CODE(name, op_code) case op_code:
    MLC_ENGINE_OPS(MLC_OP_CODE)
#undef MLC_OP_CODE
    return true;
    default:
      return false;
  }
}

const Attribute* PlanNode::FindAttr(std::string_view attr_name) const {
  for (const Attribute& a : attrs)
    if (a.name == attr_name) return &a;
  return nullptr;
}

AlignedBuffer::AlignedBuffer(size_t size) { Resize(size); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      allocation_bytes_(std::exchange(other.allocation_bytes_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    ReleaseSensitive(base_, allocation_bytes_);
    base_ = std::exchange(other.base_, nullptr);
    allocation_bytes_ = std::exchange(other.allocation_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { ReleaseSensitive(base_, allocation_bytes_); }

AlignedBuffer AlignedBuffer::AdoptSensitive(uint8_t* base, size_t allocation_bytes, size_t offset,
                                            size_t size) {
  assert(offset + size <= allocation_bytes);
  assert(reinterpret_cast<uintptr_t>(base + offset) % 64 == 0);
  AlignedBuffer buffer;
  buffer.base_ = base;
  buffer.allocation_bytes_ = allocation_bytes;
  buffer.data_ = base + offset;
  buffer.size_ = size;
  buffer.capacity_ = size;
  return buffer;
}

uint8_t* AlignedBuffer::ReleaseAllocation(size_t* allocation_bytes) {
  *allocation_bytes = std::exchange(allocation_bytes_, 0);
  data_ = nullptr;
  size_ = 0;
  capacity_ = 0;
  return std::exchange(base_, nullptr);
}

void AlignedBuffer::Reserve(size_t capacity) {
  if (capacity <= capacity_) return;
  size_t rounded = (capacity + 63) / 64 * 64;
  // Plan constants are the model's weights: they live in sensitive memory (the software TEE backs
  // it with memfd_secret). AllocateSensitive aborts on failure; the caller bounded `capacity`.
  auto* fresh = static_cast<uint8_t*>(AllocateSensitive(rounded == 0 ? 64 : rounded));
  if (data_ != nullptr && size_ > 0) std::memcpy(fresh, data_, size_);
  ReleaseSensitive(base_, allocation_bytes_);
  base_ = fresh;
  allocation_bytes_ = rounded == 0 ? 64 : rounded;
  data_ = fresh;
  capacity_ = rounded;
}

void AlignedBuffer::Resize(size_t size) {
  if (size > capacity_) Reserve(std::max(size, capacity_ + capacity_ / 2));
  if (size > size_) std::memset(data_ + size_, 0, size - size_);
  size_ = size;
}

int32_t Plan::AddConstant(std::string name, DType dtype, Shape shape, const void* bytes) {
  PlanTensor t;
  t.name = std::move(name);
  t.type = TensorType{dtype, std::move(shape)};
  t.kind = TensorKind::kConstant;
  int64_t n = 1;
  for (const Dim& d : t.type.shape) n *= d.value;
  t.data_bytes = static_cast<uint64_t>(n) * DTypeSize(dtype);
  t.data_offset = (constants.size() + 63) / 64 * 64;
  constants.Resize(t.data_offset + t.data_bytes);
  if (t.data_bytes) std::memcpy(constants.data() + t.data_offset, bytes, t.data_bytes);
  tensors.push_back(std::move(t));
  return static_cast<int32_t>(tensors.size() - 1);
}

uint64_t Plan::WeightBytes() const {
  uint64_t total = 0;
  for (const PlanTensor& t : tensors)
    if (t.kind == TensorKind::kConstant) total += t.data_bytes;
  return total;
}

}  // namespace mlcapsule::engine
