// Capsule file: pack -> parse -> verify -> decrypt round trips, and every kind of tampering
// (header and signature byte flips, ciphertext flips, truncation, chunk reordering and dropping,
// wrong keys, out-of-range fields) rejected with an error that names what failed.
#include "capsule/capsule_file.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

std::vector<uint8_t> MakePlan(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> plan(size);
  for (uint8_t& b : plan) b = static_cast<uint8_t>(rng());
  return plan;
}

PackInput MakeInput(std::span<const uint8_t> plan, uint32_t chunk_bytes) {
  PackInput input;
  input.plan = plan;
  input.model_name = "fashion-mnist-cnn";
  input.policy_json = R"({"lease":{"queries":1000}})";
  input.inputs = {IoTensor{"image", 1, {{1, true}, {1, false}, {28, false}, {28, false}}}};
  input.outputs = {IoTensor{"logits", 1, {{1, true}, {10, false}}},
                   IoTensor{"label", 7, {{1, true}}}};
  input.chunk_bytes = chunk_bytes;
  input.created_at = 1700000000;
  return input;
}

// Signs `bytes` again after a deliberate change, as an attacker holding a provider key could:
// only the encryption then stands between the change and the plan.
void Resign(std::vector<uint8_t>& bytes, const SigningKeyPair& provider) {
  Hasher64 hasher;
  hasher.Update(std::span(bytes).first(bytes.size() - 64));
  Signature signature = SignDigest(provider.secret, kCapsuleSignatureDomain, hasher.Final());
  std::memcpy(bytes.data() + bytes.size() - 64, signature.data(), 64);
}

bool Contains(const Status& status, std::string_view text) {
  return status.message().find(text) != std::string::npos;
}

class CapsuleFileTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitCrypto().ok()); }

  // 6 chunks of 4 KiB, the last one partial.
  PackedCapsule PackSmall(size_t plan_bytes = 5 * 4096 + 123) {
    plan_ = MakePlan(plan_bytes, 7);
    Result<PackedCapsule> packed = PackCapsule(MakeInput(plan_, kMinChunkBytes), provider_);
    EXPECT_TRUE(packed.ok()) << packed.status().ToString();
    return std::move(packed).value();
  }

  SigningKeyPair provider_ = GenerateSigningKeyPair();
  std::vector<uint8_t> plan_;
};

void ExpectRoundTrip(const PackedCapsule& packed, std::span<const uint8_t> plan,
                     const PackInput& input, const PublicKey& provider_key) {
  Result<CapsuleView> view = ParseAndVerifyCapsule(packed.bytes);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  const CapsuleHeader& header = view->header;
  EXPECT_EQ(header.capsule_id, packed.capsule_id);
  EXPECT_EQ(header.created_at, input.created_at);
  EXPECT_EQ(header.provider_key, provider_key);
  EXPECT_EQ(header.model_name, input.model_name);
  EXPECT_EQ(header.policy_json, input.policy_json);
  EXPECT_EQ(header.inputs, input.inputs);
  EXPECT_EQ(header.outputs, input.outputs);
  // The stream carries the payload: a 64-byte header (sizes, watermark key), then the plan.
  const size_t payload_bytes = kPayloadHeaderBytes + plan.size();
  EXPECT_EQ(header.plan_bytes, payload_bytes);
  EXPECT_EQ(header.chunk_bytes, input.chunk_bytes);
  EXPECT_EQ(header.chunk_count, (payload_bytes + input.chunk_bytes - 1) / input.chunk_bytes);
  EXPECT_EQ(view->header_digest, Hash({view->header_region}));
  EXPECT_EQ(view->ciphertext.size(), payload_bytes + header.chunk_count * kStreamOverhead);
  EXPECT_EQ(view->header_region.data(), packed.bytes.data());

  Result<SecretBytes> decrypted = DecryptPayload(*view, packed.capsule_key);
  ASSERT_TRUE(decrypted.ok()) << decrypted.status().ToString();
  ASSERT_EQ(decrypted->size(), payload_bytes);
  EXPECT_EQ(header.plan_digest, Hash({decrypted->span()}));
  Result<PayloadLayout> layout = ParsePayloadLayout(decrypted->span());
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->plan_offset, kPayloadHeaderBytes);
  ASSERT_EQ(layout->plan_bytes, plan.size());
  EXPECT_EQ(layout->membership_bytes, 0u);
  EXPECT_EQ(std::memcmp(decrypted->data() + layout->plan_offset, plan.data(), plan.size()), 0);
}

TEST_F(CapsuleFileTest, PayloadCarriesMembershipPlanAndAFreshWatermarkKey) {
  std::vector<uint8_t> membership = MakePlan(1000, 3);
  std::vector<uint8_t> plan = MakePlan(5000, 2);
  PackInput input = MakeInput(plan, kMinChunkBytes);
  input.membership_plan = membership;
  std::array<uint8_t, kWatermarkKeyBytes> keys[2];
  for (int i = 0; i < 2; ++i) {
    Result<PackedCapsule> packed = PackCapsule(input, provider_);
    ASSERT_TRUE(packed.ok()) << packed.status().ToString();
    Result<CapsuleView> view = ParseAndVerifyCapsule(packed->bytes);
    ASSERT_TRUE(view.ok());
    Result<SecretBytes> payload = DecryptPayload(*view, packed->capsule_key);
    ASSERT_TRUE(payload.ok()) << payload.status().ToString();
    Result<PayloadLayout> layout = ParsePayloadLayout(payload->span());
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    ASSERT_EQ(layout->plan_bytes, plan.size());
    EXPECT_EQ(std::memcmp(payload->data() + layout->plan_offset, plan.data(), plan.size()), 0);
    ASSERT_EQ(layout->membership_bytes, membership.size());
    EXPECT_EQ(layout->membership_offset % 64, 0u);
    EXPECT_EQ(std::memcmp(payload->data() + layout->membership_offset, membership.data(),
                          membership.size()),
              0);
    std::memcpy(keys[i].data(), payload->data() + layout->watermark_key_offset, kWatermarkKeyBytes);
  }
  EXPECT_NE(keys[0], keys[1]) << "each capsule gets its own watermark key";
  EXPECT_NE(keys[0], (std::array<uint8_t, kWatermarkKeyBytes>{}));
}

TEST(PayloadLayoutTest, RejectsInconsistentSizes) {
  std::vector<uint8_t> payload(kPayloadHeaderBytes + 100, 0);
  std::memcpy(payload.data(), kPayloadMagic, 8);
  auto set = [&](uint64_t plan, uint64_t membership) {
    std::memcpy(payload.data() + 8, &plan, 8);
    std::memcpy(payload.data() + 16, &membership, 8);
  };
  set(100, 0);
  EXPECT_TRUE(ParsePayloadLayout(payload).ok());
  set(99, 0);  // a byte left over
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  set(0, 0);
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  set(UINT64_MAX, 0);
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  set(10, 100 - 10);  // the membership plan must start 64-aligned, at 128, not at 74
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  set(10, 37);  // from 128, 36 bytes are left
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  set(10, UINT64_MAX);
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  payload.resize(kPayloadHeaderBytes + 64 + 36);
  set(10, 36);
  Result<PayloadLayout> layout = ParsePayloadLayout(payload);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->membership_offset, kPayloadHeaderBytes + 64);
  payload[0] = 'X';
  EXPECT_FALSE(ParsePayloadLayout(payload).ok());
  EXPECT_FALSE(ParsePayloadLayout(std::span<const uint8_t>(payload).first(20)).ok());
}

TEST_F(CapsuleFileTest, MultiChunkRoundTrip) {
  std::vector<uint8_t> plan = MakePlan(5 * 4096 + 123, 1);
  PackInput input = MakeInput(plan, kMinChunkBytes);
  Result<PackedCapsule> packed = PackCapsule(input, provider_);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  ExpectRoundTrip(*packed, plan, input, provider_.public_key);
  // No lease signers given: the provider key is pinned.
  Result<CapsuleView> view = ParseCapsule(packed->bytes);
  ASSERT_TRUE(view.ok());
  ASSERT_EQ(view->header.lease_signers.size(), 1u);
  EXPECT_EQ(view->header.lease_signers[0], provider_.public_key);
  EXPECT_EQ(view->header.chunk_count, 6u);
}

TEST_F(CapsuleFileTest, ExactMultipleOfChunkSize) {
  std::vector<uint8_t> plan = MakePlan(3 * 4096, 2);
  PackInput input = MakeInput(plan, kMinChunkBytes);
  Result<PackedCapsule> packed = PackCapsule(input, provider_);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  ExpectRoundTrip(*packed, plan, input, provider_.public_key);
}

TEST_F(CapsuleFileTest, OneChunkRoundTrip) {
  for (size_t size : {size_t{1}, size_t{1000}, size_t{kDefaultChunkBytes}}) {
    std::vector<uint8_t> plan = MakePlan(size, 3);
    PackInput input = MakeInput(plan, kDefaultChunkBytes);
    Result<PackedCapsule> packed = PackCapsule(input, provider_);
    ASSERT_TRUE(packed.ok()) << packed.status().ToString();
    ExpectRoundTrip(*packed, plan, input, provider_.public_key);
  }
}

TEST_F(CapsuleFileTest, ExplicitLeaseSignersArePinned) {
  std::vector<uint8_t> plan = MakePlan(100, 4);
  PackInput input = MakeInput(plan, kMinChunkBytes);
  SigningKeyPair server_a = GenerateSigningKeyPair(), server_b = GenerateSigningKeyPair();
  input.lease_signers = {server_a.public_key, server_b.public_key};
  Result<PackedCapsule> packed = PackCapsule(input, provider_);
  ASSERT_TRUE(packed.ok());
  Result<CapsuleView> view = ParseAndVerifyCapsule(packed->bytes);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->header.lease_signers, input.lease_signers);
}

TEST_F(CapsuleFileTest, FreshIdKeyAndTimePerPack) {
  std::vector<uint8_t> plan = MakePlan(100, 5);
  PackInput input = MakeInput(plan, kMinChunkBytes);
  input.created_at = 0;
  const int64_t before = static_cast<int64_t>(std::time(nullptr));
  Result<PackedCapsule> a = PackCapsule(input, provider_);
  Result<PackedCapsule> b = PackCapsule(input, provider_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->capsule_id, b->capsule_id);
  EXPECT_FALSE(ConstantTimeEqual(a->capsule_key.span(), b->capsule_key.span()));
  EXPECT_EQ(a->capsule_key.size(), kSymmetricKeyBytes);
  Result<CapsuleView> view = ParseCapsule(a->bytes);
  ASSERT_TRUE(view.ok());
  EXPECT_GE(view->header.created_at, before);
  EXPECT_LE(view->header.created_at, before + 60);
  // Another capsule's key does not open this one.
  Result<SecretBytes> wrong = DecryptPayload(*view, b->capsule_key);
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(Contains(wrong.status(), "chunk 0 of 1")) << wrong.status().ToString();
}

TEST_F(CapsuleFileTest, EveryHeaderAndSignatureByteFlipIsRejected) {
  PackedCapsule packed = PackSmall();
  Result<CapsuleView> view = ParseCapsule(packed.bytes);
  ASSERT_TRUE(view.ok());
  const size_t header_end = view->header_region.size();
  ASSERT_GT(header_end, 200u);
  for (size_t i = 0; i < header_end; ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      std::vector<uint8_t> bytes = packed.bytes;
      bytes[i] ^= bit;
      EXPECT_FALSE(ParseAndVerifyCapsule(bytes).ok()) << "header byte " << i;
    }
  }
  for (size_t i = packed.bytes.size() - 64; i < packed.bytes.size(); ++i) {
    std::vector<uint8_t> bytes = packed.bytes;
    bytes[i] ^= 0x01;
    Result<CapsuleView> flipped = ParseAndVerifyCapsule(bytes);
    ASSERT_FALSE(flipped.ok()) << "signature byte " << i;
    EXPECT_EQ(flipped.status().code(), StatusCode::kPermissionDenied);
    EXPECT_TRUE(Contains(flipped.status(), "signature does not verify"));
  }
}

TEST_F(CapsuleFileTest, CiphertextFlipsAreRejectedByVerifyAndByDecrypt) {
  PackedCapsule packed = PackSmall();
  Result<CapsuleView> original = ParseCapsule(packed.bytes);
  ASSERT_TRUE(original.ok());
  const size_t begin = original->header_region.size();
  const size_t sealed_chunk = kMinChunkBytes + kStreamOverhead;
  const size_t chunk_count = original->header.chunk_count;
  std::mt19937 rng(12345);
  std::uniform_int_distribution<size_t> position(0, original->ciphertext.size() - 1);
  std::vector<size_t> positions = {0, original->ciphertext.size() - 1, sealed_chunk - 1,
                                   sealed_chunk};
  while (positions.size() < 200) positions.push_back(position(rng));

  for (size_t offset : positions) {
    std::vector<uint8_t> bytes = packed.bytes;
    bytes[begin + offset] ^= static_cast<uint8_t>(1u << (offset % 8));
    Result<CapsuleView> verified = ParseAndVerifyCapsule(bytes);
    EXPECT_FALSE(verified.ok()) << "ciphertext byte " << offset;

    // Without the signature check (ParseCapsule), the encryption alone catches the change, in the
    // chunk that holds the byte.
    Result<CapsuleView> parsed = ParseCapsule(bytes);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    Result<SecretBytes> plan = DecryptPayload(*parsed, packed.capsule_key);
    ASSERT_FALSE(plan.ok()) << "ciphertext byte " << offset;
    std::string expected = fmt::format("chunk {} of {}", offset / sealed_chunk, chunk_count);
    EXPECT_TRUE(Contains(plan.status(), expected))
        << plan.status().ToString() << " (expected " << expected << ")";
  }
  // And with a valid signature over the changed bytes (a re-signed capsule).
  for (size_t k = 0; k < 20; ++k) {
    std::vector<uint8_t> bytes = packed.bytes;
    bytes[begin + positions[k]] ^= 0x40;
    Resign(bytes, provider_);
    Result<CapsuleView> verified = ParseAndVerifyCapsule(bytes);
    ASSERT_TRUE(verified.ok()) << verified.status().ToString();
    EXPECT_FALSE(DecryptPayload(*verified, packed.capsule_key).ok()) << positions[k];
  }
}

TEST_F(CapsuleFileTest, EveryTruncationAndExtensionIsRejected) {
  PackedCapsule packed = PackSmall(2 * 4096 + 5);
  for (size_t n = 0; n < packed.bytes.size(); ++n) {
    std::span<const uint8_t> truncated = std::span(packed.bytes).first(n);
    Result<CapsuleView> parsed = ParseCapsule(truncated);
    ASSERT_FALSE(parsed.ok()) << "length " << n;
    if (n > 300 && n % 1000 == 0) {
      EXPECT_TRUE(Contains(parsed.status(), "truncated")) << parsed.status().ToString();
    }
  }
  std::vector<uint8_t> longer = packed.bytes;
  longer.push_back(0);
  Result<CapsuleView> parsed = ParseCapsule(longer);
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(Contains(parsed.status(), "extra bytes")) << parsed.status().ToString();
}

TEST_F(CapsuleFileTest, ReorderedChunksAreDetected) {
  PackedCapsule packed = PackSmall();
  Result<CapsuleView> view = ParseCapsule(packed.bytes);
  ASSERT_TRUE(view.ok());
  const size_t begin = view->header_region.size();
  const size_t sealed_chunk = kMinChunkBytes + kStreamOverhead;
  // Swap the (full) chunks 1 and 2 and sign the result.
  std::vector<uint8_t> bytes = packed.bytes;
  std::swap_ranges(bytes.begin() + begin + sealed_chunk, bytes.begin() + begin + 2 * sealed_chunk,
                   bytes.begin() + begin + 2 * sealed_chunk);
  Resign(bytes, provider_);
  Result<CapsuleView> swapped = ParseAndVerifyCapsule(bytes);
  ASSERT_TRUE(swapped.ok()) << swapped.status().ToString();
  Result<SecretBytes> plan = DecryptPayload(*swapped, packed.capsule_key);
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(Contains(plan.status(), "chunk 1 of 6")) << plan.status().ToString();
}

TEST_F(CapsuleFileTest, DroppedChunksAreDetected) {
  PackedCapsule packed = PackSmall(4 * 4096 - kPayloadHeaderBytes);  // 4 full chunks
  Result<CapsuleView> view = ParseCapsule(packed.bytes);
  ASSERT_TRUE(view.ok());
  const size_t sealed_chunk = kMinChunkBytes + kStreamOverhead;

  // Drop the last chunk and shrink the sizes to match, keeping the header digest (the AD): the
  // new last chunk has no final tag.
  CapsuleView dropped_last = *view;
  dropped_last.header.plan_bytes -= kMinChunkBytes;
  dropped_last.header.chunk_count -= 1;
  dropped_last.ciphertext = view->ciphertext.first(3 * sealed_chunk);
  Result<SecretBytes> plan = DecryptPayload(dropped_last, packed.capsule_key);
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(Contains(plan.status(), "chunk 2 of 3 is the last but lacks the final tag"))
      << plan.status().ToString();

  // Drop a middle chunk: the next one no longer decrypts in its place.
  std::vector<uint8_t> ciphertext(view->ciphertext.begin(), view->ciphertext.end());
  ciphertext.erase(ciphertext.begin() + sealed_chunk, ciphertext.begin() + 2 * sealed_chunk);
  CapsuleView dropped_middle = dropped_last;
  dropped_middle.ciphertext = ciphertext;
  plan = DecryptPayload(dropped_middle, packed.capsule_key);
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(Contains(plan.status(), "chunk 1 of 3 does not decrypt")) << plan.status().ToString();

  // A ciphertext of the wrong size for the header is refused before decryption.
  CapsuleView short_view = *view;
  short_view.ciphertext = view->ciphertext.first(view->ciphertext.size() - 1);
  EXPECT_FALSE(DecryptPayload(short_view, packed.capsule_key).ok());
}

TEST_F(CapsuleFileTest, HeaderEditsBreakDecryptionEvenWhenResigned) {
  PackedCapsule packed = PackSmall();
  Result<CapsuleView> view = ParseCapsule(packed.bytes);
  ASSERT_TRUE(view.ok());
  // Change one letter of the model name (a field nothing else depends on) and sign again.
  std::vector<uint8_t> bytes = packed.bytes;
  const std::string& name = view->header.model_name;
  auto where = std::search(bytes.begin(), bytes.begin() + view->header_region.size(), name.begin(),
                           name.end());
  ASSERT_NE(where, bytes.begin() + view->header_region.size());
  *where ^= 0x20;
  Resign(bytes, provider_);
  Result<CapsuleView> edited = ParseAndVerifyCapsule(bytes);
  ASSERT_TRUE(edited.ok()) << edited.status().ToString();
  EXPECT_NE(edited->header.model_name, name);
  Result<SecretBytes> plan = DecryptPayload(*edited, packed.capsule_key);
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(Contains(plan.status(), "chunk 0 of 6")) << plan.status().ToString();
}

TEST_F(CapsuleFileTest, WrongKeyAndDigestMismatchAreErrors) {
  PackedCapsule packed = PackSmall();
  Result<CapsuleView> view = ParseAndVerifyCapsule(packed.bytes);
  ASSERT_TRUE(view.ok());
  EXPECT_FALSE(DecryptPayload(*view, RandomSecret(kSymmetricKeyBytes)).ok());
  Result<SecretBytes> short_key = DecryptPayload(*view, RandomSecret(16));
  ASSERT_FALSE(short_key.ok());
  EXPECT_TRUE(Contains(short_key.status(), "16 bytes"));

  CapsuleView wrong_digest = *view;
  wrong_digest.header.plan_digest[0] ^= 1;
  Result<SecretBytes> plan = DecryptPayload(wrong_digest, packed.capsule_key);
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(Contains(plan.status(), "plan digest")) << plan.status().ToString();
}

TEST_F(CapsuleFileTest, PackRejectsOutOfRangeInput) {
  std::vector<uint8_t> plan = MakePlan(100, 6);
  auto expect_error = [&](PackInput input, std::string_view text) {
    Result<PackedCapsule> packed = PackCapsule(input, provider_);
    ASSERT_FALSE(packed.ok()) << text;
    EXPECT_TRUE(Contains(packed.status(), text)) << packed.status().ToString();
  };
  PackInput input = MakeInput(plan, kMinChunkBytes);
  input.plan = {};
  expect_error(input, "the plan is empty");
  input = MakeInput(plan, 1000);
  expect_error(input, "chunk size 1000 bytes is outside 4096..16777216");
  input = MakeInput(plan, kMaxChunkBytes + 1);
  expect_error(input, "chunk size");
  input = MakeInput(plan, kMinChunkBytes);
  input.lease_signers.resize(9);
  expect_error(input, "9 lease signers");
  input = MakeInput(plan, kMinChunkBytes);
  input.model_name = std::string(257, 'm');
  expect_error(input, "model name is 257 bytes, over the limit 256");
  input = MakeInput(plan, kMinChunkBytes);
  input.model_name = "bad\xff";
  expect_error(input, "not valid UTF-8");
  input = MakeInput(plan, kMinChunkBytes);
  input.policy_json = std::string(kMaxPolicyBytes + 1, ' ');
  expect_error(input, "policy is 65537 bytes");
  input = MakeInput(plan, kMinChunkBytes);
  input.inputs.clear();
  expect_error(input, "input count 0 is outside 1..64");
  input = MakeInput(plan, kMinChunkBytes);
  input.outputs.resize(65, input.outputs[0]);
  expect_error(input, "output count 65 is outside 1..64");
  input = MakeInput(plan, kMinChunkBytes);
  input.inputs[0].dims.resize(9);
  expect_error(input, "rank 9");
  input = MakeInput(plan, kMinChunkBytes);
  input.inputs[0].dims[1].value = -1;
  expect_error(input, "dimension -1");
  input = MakeInput(plan, kMinChunkBytes);
  input.outputs[1].dtype = 3;
  expect_error(input, "dtype 3");
}

// Hand-edited fields (re-signed so only the parser's limits stand in the way) are reported with
// the field, the value and the allowed range.
TEST_F(CapsuleFileTest, ParserNamesTheBadField) {
  PackedCapsule packed = PackSmall(100);
  auto parse_edited = [&](size_t offset, std::span<const uint8_t> value) {
    std::vector<uint8_t> bytes = packed.bytes;
    std::memcpy(bytes.data() + offset, value.data(), value.size());
    Resign(bytes, provider_);
    return ParseAndVerifyCapsule(bytes).status();
  };
  auto u32 = [](uint32_t v) {
    std::vector<uint8_t> out(4);
    std::memcpy(out.data(), &v, 4);
    return out;
  };
  Status status = parse_edited(0, AsBytes("MLCAPSUX"));
  EXPECT_TRUE(Contains(status, "not a capsule file")) << status.ToString();
  status = parse_edited(8, u32(kCapsuleVersion + 1));
  EXPECT_EQ(status.code(), StatusCode::kUnsupported);
  EXPECT_TRUE(Contains(status, fmt::format("version {}", kCapsuleVersion + 1)))
      << status.ToString();
  status = parse_edited(12, u32(kMaxCapsuleHeaderBytes + 1));
  EXPECT_TRUE(Contains(status, "header size 1048577 bytes is over the limit 1048576"))
      << status.ToString();
  // magic 8 + version 4 + header_bytes 4 + capsule_id 16 + created_at 8 + provider_key 32.
  const size_t signer_count = 72;
  status = parse_edited(signer_count, std::vector<uint8_t>{0});
  EXPECT_TRUE(Contains(status, "lease signer count 0 is outside 1..8")) << status.ToString();
  status = parse_edited(signer_count, std::vector<uint8_t>{9});
  EXPECT_TRUE(Contains(status, "lease signer count 9 is outside 1..8")) << status.ToString();
  // model_name length follows the single signer key.
  status = parse_edited(signer_count + 1 + 32, u32(300));
  EXPECT_TRUE(Contains(status, "model name length 300 is over the limit 256")) << status.ToString();
}

TEST_F(CapsuleFileTest, CapsuleIdHex) {
  CapsuleId id{};
  id[0] = 0xab;
  id[15] = 0x01;
  EXPECT_EQ(CapsuleIdHex(id), "ab000000000000000000000000000001");
}

// A realistic plan size: packing, verifying and decrypting stream over the plan once each.
TEST_F(CapsuleFileTest, LargePlanRoundTrip) {
  std::vector<uint8_t> plan = MakePlan(45 << 20, 8);
  PackInput input = MakeInput(plan, kDefaultChunkBytes);
  auto start = std::chrono::steady_clock::now();
  Result<PackedCapsule> packed = PackCapsule(input, provider_);
  ASSERT_TRUE(packed.ok());
  auto packed_at = std::chrono::steady_clock::now();
  Result<CapsuleView> view = ParseAndVerifyCapsule(packed->bytes);
  ASSERT_TRUE(view.ok());
  auto verified_at = std::chrono::steady_clock::now();
  Result<SecretBytes> decrypted = DecryptPayload(*view, packed->capsule_key);
  ASSERT_TRUE(decrypted.ok());
  auto decrypted_at = std::chrono::steady_clock::now();
  ASSERT_EQ(decrypted->size(), kPayloadHeaderBytes + plan.size());
  EXPECT_EQ(std::memcmp(decrypted->data() + kPayloadHeaderBytes, plan.data(), plan.size()), 0);
  auto ms = [](auto a, auto b) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
  };
  std::printf("45 MiB plan: pack %lld ms, verify %lld ms, decrypt %lld ms\n",
              static_cast<long long>(ms(start, packed_at)),
              static_cast<long long>(ms(packed_at, verified_at)),
              static_cast<long long>(ms(verified_at, decrypted_at)));
  // A loose guard against an accidental quadratic pass or extra copies (about 0.1 s each here).
  EXPECT_LT(ms(packed_at, decrypted_at), 10000);
}

}  // namespace
}  // namespace mlcapsule::capsule
