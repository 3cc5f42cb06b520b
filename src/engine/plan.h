// The compiled plan: what the compiler produces and the engine runs. The byte format is specified
// in docs/plan-format.md (ParsePlan's header comment repeats the grammar); a parsed plan is
// untrusted until ValidatePlan (called by Session::Create) has checked every op, index, attribute,
// shape and size once, so kernels need no checks in their hot loops.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/tensor.h"

namespace mlcapsule::engine {

// Every operator the engine knows, with its stable code in the plan format. Codes are never
// reused; new ops get new codes.
#define MLC_ENGINE_OPS(X)                                              \
  X(Identity, 1)                                                       \
  X(Add, 2)                                                            \
  X(Sub, 3)                                                            \
  X(Mul, 4)                                                            \
  X(Div, 5)                                                            \
  X(Relu, 6)                                                           \
  X(Clip, 7)                                                           \
  X(Sigmoid, 8)                                                        \
  X(HardSigmoid, 9)                                                    \
  X(HardSwish, 10)                                                     \
  X(Tanh, 11)                                                          \
  X(LeakyRelu, 12)                                                     \
  X(Softmax, 13)                                                       \
  X(LogSoftmax, 14)                                                    \
  X(Conv, 15)                                                          \
  X(Gemm, 16)                                                          \
  X(MatMul, 17)                                                        \
  X(MaxPool, 18)                                                       \
  X(AveragePool, 19)                                                   \
  X(GlobalAveragePool, 20)                                             \
  X(GlobalMaxPool, 21)                                                 \
  X(BatchNormalization, 22)                                            \
  X(Concat, 23)                                                        \
  X(Flatten, 24)                                                       \
  X(Reshape, 25)                                                       \
  X(Transpose, 26)                                                     \
  X(Squeeze, 27)                                                       \
  X(Unsqueeze, 28)                                                     \
  X(Shape, 29)                                                         \
  X(Gather, 30)                                                        \
  X(Slice, 31)                                                         \
  X(Cast, 32)                                                          \
  X(ConstantOfShape, 33)                                               \
  X(ReduceMean, 34)                                                    \
  X(Pad, 35)                                                           \
  X(Split, 36)                                                         \
  X(Exp, 37)                                                           \
  X(Log, 38)                                                           \
  X(Sqrt, 39)                                                          \
  X(Neg, 40)                                                           \
  X(Abs, 41)                                                           \
  X(Pow, 42)                                                           \
  X(Erf, 43)                                                           \
  X(ReduceSum, 44)                                                     \
  X(ReduceMax, 45)                                                     \
  X(ReduceMin, 46)                                                     \
  X(Max, 47)                                                           \
  X(Min, 48)                                                           \
  X(Sum, 49)                                                           \
  X(Reciprocal, 50)                                                    \
  X(Floor, 51)                                                         \
  X(Ceil, 52)                                                          \
  X(Expand, 53)                                                        \
  X(Tile, 54)                                                          \
  X(Elu, 55)                                                           \
  X(Selu, 56)                                                          \
  X(Softplus, 57)                                                      \
  X(Mean, 58)                                                          \
  X(ReduceProd, 59)                                                    \
  X(ReduceL2, 60)                                                      \
  X(ReduceSumSquare, 61)                                               \
  X(ReduceLogSumExp, 62)                                               \
  X(Range, 63)                                                         \
  X(Sign, 64)                                                          \
  X(PRelu, 65)                                                         \
  X(Softsign, 66)                                                      \
  X(ThresholdedRelu, 67)                                               \
  X(Gelu, 68)                                                          \
  X(ReduceL1, 69)                                                      \
  X(ReduceLogSum, 70)                                                  \
  X(Mish, 71)                                                          \
  X(InstanceNormalization, 72)                                         \
  X(LpNormalization, 73)                                               \
  X(Celu, 74)                                                          \
  X(Hardmax, 75)                                                       \
  X(Sin, 76)                                                           \
  X(Cos, 77)                                                           \
  X(ArgMax, 78)                                                        \
  X(ArgMin, 79)                                                        \
  X(Mod, 80)                                                           \
  X(DepthToSpace, 81)                                                  \
  X(SpaceToDepth, 82)                                                  \
  X(Trilu, 83)                                                         \
  X(CumSum, 84)                                                        \
  X(Round, 85)                                                         \
  /* MLCapsule-internal ops produced by the compiler (not in ONNX): */ \
  X(ConvNhwc, 200)                                                     \
  X(MaxPoolNhwc, 201)                                                  \
  X(AveragePoolNhwc, 202)                                              \
  X(GlobalAveragePoolNhwc, 203)                                        \
  X(FullyConnected, 204)

enum class OpType : uint16_t {
#define MLC_OP_ENUM(name, code) k##name = code,
  MLC_ENGINE_OPS(MLC_OP_ENUM)
#undef MLC_OP_ENUM
};

const char* OpTypeName(OpType type);
// Looks up an op by its name ("Conv"); false when the engine has no such op.
bool OpTypeFromName(std::string_view name, OpType* type);
bool IsKnownOpCode(uint16_t code);

enum class AttrKind : uint8_t { kInts = 1, kFloats = 2 };

// Attributes keep ONNX's names. Scalars are one-element lists; strings are not allowed in plans
// (the compiler turns string attributes such as auto_pad or Pad's mode into ints).
struct Attribute {
  std::string name;
  AttrKind kind = AttrKind::kInts;
  std::vector<int64_t> ints;
  std::vector<float> floats;
};

inline constexpr int32_t kNoTensor = -1;  // an absent optional input

struct PlanNode {
  OpType op = OpType::kIdentity;
  std::string name;
  std::vector<int32_t> inputs;  // tensor indices, kNoTensor for absent optional inputs
  std::vector<int32_t> outputs;
  std::vector<Attribute> attrs;
  const Attribute* FindAttr(std::string_view attr_name) const;
};

enum class TensorKind : uint8_t { kIntermediate = 0, kInput = 1, kOutput = 2, kConstant = 3 };

struct PlanTensor {
  std::string name;
  TensorType type;
  TensorKind kind = TensorKind::kIntermediate;
  uint64_t data_offset = 0;  // constants: where their bytes start in Plan::constants
  uint64_t data_bytes = 0;
};

// 64-byte aligned byte storage for constants (kernels use aligned SIMD loads on weights).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size);
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Changes the size to `size` bytes, keeping the contents; reallocates only past the capacity.
  void Resize(size_t size);
  // Makes room for `capacity` bytes so later Resize calls up to it do not copy.
  void Reserve(size_t capacity);

  // Takes over an allocation made by AllocateSensitive(allocation_bytes) (base/sensitive_memory.h)
  // and exposes [offset, offset + size) of it; `base + offset` must be 64-byte aligned. Lets the
  // trusted core keep a decrypted plan's weights where they were decrypted, without a copy.
  static AlignedBuffer AdoptSensitive(uint8_t* base, size_t allocation_bytes, size_t offset,
                                      size_t size);
  // Gives up the allocation (for AdoptSensitive elsewhere): returns its base and size, leaves
  // this buffer empty.
  uint8_t* ReleaseAllocation(size_t* allocation_bytes);

 private:
  uint8_t* base_ = nullptr;  // the allocation (data_ may point into it)
  size_t allocation_bytes_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

struct Plan {
  std::string model_name;
  std::string producer;
  std::vector<PlanTensor> tensors;
  std::vector<PlanNode> nodes;  // in execution order
  std::vector<int32_t> inputs;
  std::vector<int32_t> outputs;
  AlignedBuffer constants;

  // Appends a constant and returns its tensor index.
  int32_t AddConstant(std::string name, DType dtype, Shape shape, const void* bytes);
  const void* ConstantData(int32_t tensor) const {
    return constants.data() + tensors[static_cast<size_t>(tensor)].data_offset;
  }
  uint64_t WeightBytes() const;
};

// Limits the loader enforces on untrusted plans (docs/plan-format.md lists them too).
inline constexpr uint32_t kPlanVersion = 1;
inline constexpr uint64_t kMaxPlanTensors = 1 << 20;
inline constexpr uint64_t kMaxPlanNodes = 1 << 20;
inline constexpr uint64_t kMaxNodeInputs = 4096;
inline constexpr uint64_t kMaxNodeAttrs = 64;
inline constexpr uint64_t kMaxAttrValues = 1 << 16;
inline constexpr uint64_t kMaxNameBytes = 4096;
inline constexpr uint64_t kMaxConstantBytes = uint64_t{8} << 30;

std::string SerializePlan(const Plan& plan);
// Parses the byte format; checks structure, bounds and internal references, not semantics.
Result<Plan> ParsePlan(std::span<const uint8_t> bytes);
// Same, but the plan's constants stay in `bytes` (no copy): the plan takes the buffer over.
Result<Plan> ParsePlan(AlignedBuffer bytes);
// Semantic validation: every op known, attribute names allowed, input/output counts, tensor
// indices in range, topological order, shapes equal to what shape inference derives.
Status ValidatePlan(const Plan& plan);

}  // namespace mlcapsule::engine
