// In-memory plan helpers (see plan.h). The byte format lives in plan_format.cc.
#include "engine/plan.h"

#include "base/sensitive_memory.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

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
    : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
  other.data_ = nullptr;
  other.size_ = 0;
  other.capacity_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    ReleaseSensitive(data_, capacity_);
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.capacity_ = 0;
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { ReleaseSensitive(data_, capacity_); }

void AlignedBuffer::Reserve(size_t capacity) {
  if (capacity <= capacity_) return;
  size_t rounded = (capacity + 63) / 64 * 64;
  // Plan constants are the model's weights: they live in sensitive memory (the software TEE backs
  // it with memfd_secret). AllocateSensitive aborts on failure; the caller bounded `capacity`.
  auto* fresh = static_cast<uint8_t*>(AllocateSensitive(rounded == 0 ? 64 : rounded));
  if (data_ != nullptr && size_ > 0) std::memcpy(fresh, data_, size_);
  ReleaseSensitive(data_, capacity_);
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
